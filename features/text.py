"""Text feature groups from the fine-tuned interest model."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from features.history import click_histories, rows_by_history
from features.registry import KEYS, FeatureContext, FeatureSpec, MomentContext, MomentValues, at_moment, register


def history_length(scorer: Any) -> int:
    """How many recent clicks make a user for this interest model: the length it was trained
    with (its config's `history_len`), so training and serving read the same number."""
    return int(scorer.history_len)


@register(
    "interest",
    [
        FeatureSpec("interest_score", pl.Float32, "fine-tuned LM match of the item's text with the user's recent clicks"),
        FeatureSpec("interest_history_len", pl.Int32, "how many recent clicks the interest score was built from"),
        FeatureSpec("interest_max", pl.Float32, "the item's highest text cosine to any one of the user's recent clicks (0: none)"),
    ],
    requires=("interest",),
)
def interest(ctx: FeatureContext) -> pl.DataFrame:
    scorer = ctx.artefacts["interest"]
    histories = click_histories(ctx.log, ctx.targets, history_length(scorer))
    rows = ctx.targets.select(*KEYS, "user_id", "ts").join(histories, on=["user_id", "ts"], how="left", maintain_order="left")
    lists: list[list[str]] = [h if h is not None else [] for h in rows["history"].to_list()]
    scores = np.asarray(scorer.score(lists, rows["item_id"].to_list()), dtype=np.float32)
    return rows.select(*KEYS, interest_history_len=pl.col("history").list.len()).with_columns(
        interest_score=pl.Series(scores), interest_max=pl.Series(max_similarity(scorer, lists, rows["item_id"].to_list())),
    )


def max_similarity(scorer: Any, histories: list[list[str]], item_ids: list[str]) -> np.ndarray:
    """Per row, the largest cosine between the item's vector and each history item's vector: a
    reader of several topics matches an item of any one of them (the mean of the history does
    not). 0 without history or vector."""
    out = np.zeros(len(item_ids), dtype=np.float32)
    by_history = {key: rows for key, rows in rows_by_history(histories).items() if key}
    if not by_history:
        return out
    ids = sorted({i for h in by_history for i in h} | set(item_ids))
    vectors = np.asarray(scorer.item_vectors(ids), dtype=np.float32)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    at = {item: k for k, item in enumerate(ids)}
    items = np.array([at[i] for i in item_ids], dtype=np.int64)
    for history, rows in by_history.items():
        sims = vectors[items[rows]] @ vectors[[at[i] for i in history]].T
        out[rows] = sims.max(axis=1)
    return out


def histories_at(ctx: MomentContext, length: int) -> list[list[str]]:
    """Per target row, the user's last `length` clicks from the state (what `click_histories` gives
    for a moment after the whole log)."""
    users, ids = ctx.state.users, ctx.user_ids
    of_user = {u: users[u].history(length) if u in users else [] for u in set(ids)}  # each user once
    return [of_user[u] for u in ids]


@at_moment("interest")
def interest_at(ctx: MomentContext) -> MomentValues:
    lists = histories_at(ctx, history_length(ctx.artefacts["interest"]))
    items = ctx.item_ids
    scores = np.asarray(ctx.artefacts["interest"].score(lists, items), dtype=np.float32)
    return {"interest_score": scores, "interest_history_len": np.array([len(h) for h in lists], dtype=np.int32),
            "interest_max": max_similarity(ctx.artefacts["interest"], lists, items)}
