"""Text feature groups from the fine-tuned interest model."""

from __future__ import annotations

import numpy as np
import polars as pl

from features.history import click_histories
from features.registry import KEYS, FeatureContext, FeatureSpec, MomentContext, MomentValues, at_moment, register

HISTORY_LENGTH = 10


@register(
    "interest",
    [
        FeatureSpec("interest_score", pl.Float32, "fine-tuned LM match of the item's text with the user's recent clicks"),
        FeatureSpec("interest_history_len", pl.Int32, "how many recent clicks the interest score was built from"),
    ],
    requires=("interest",),
)
def interest(ctx: FeatureContext) -> pl.DataFrame:
    scorer = ctx.artefacts["interest"]
    histories = click_histories(ctx.log, ctx.targets, HISTORY_LENGTH)
    rows = ctx.targets.select(*KEYS, "user_id", "ts").join(histories, on=["user_id", "ts"], how="left", maintain_order="left")
    lists: list[list[str]] = [h if h is not None else [] for h in rows["history"].to_list()]
    scores = np.asarray(scorer.score(lists, rows["item_id"].to_list()), dtype=np.float32)
    return rows.select(*KEYS, interest_history_len=pl.col("history").list.len()).with_columns(
        interest_score=pl.Series(scores)
    )


def histories_at(ctx: MomentContext, length: int) -> list[list[str]]:
    """Per target row, the user's last `length` clicks from the state (what `click_histories` gives
    for a moment after the whole log)."""
    users = ctx.state.users
    return [users[u].history(length) if u in users else [] for u in ctx.targets["user_id"].to_list()]


@at_moment("interest")
def interest_at(ctx: MomentContext) -> MomentValues:
    lists = histories_at(ctx, HISTORY_LENGTH)
    scores = np.asarray(ctx.artefacts["interest"].score(lists, ctx.targets["item_id"].to_list()), dtype=np.float32)
    return {"interest_score": scores, "interest_history_len": np.array([len(h) for h in lists], dtype=np.int32)}
