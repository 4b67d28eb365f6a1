"""Blurb features for the ranker: how well the item's shown blurb matches the user's history
(scored by the interest model), the blurb's length, and whether it is a fallback.

History of a target row = the user's clicked item ids with ts strictly before the row's ts, most
recent last, at most HISTORY_LEN. A row with no history gets a null interest score (missing for the
ranker); an item without a blurb row gets null score and length 0 and fallback 1.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import numpy as np
import polars as pl

from features.registry import KEYS, FeatureContext, FeatureSpec, register

HISTORY_LEN = 10
WORD = r"[A-Za-z][A-Za-z'-]*|\d+(?:[.,]\d+)?"  # the same word rule as the blurb length checks


def histories(targets: pl.DataFrame, log: pl.DataFrame, k: int = HISTORY_LEN) -> list[list[str]]:
    """Per target row, the user's last k clicked item ids strictly before the row's ts (oldest first)."""
    clicks = log.filter(pl.col("clicked") == 1).select("user_id", "item_id", "ts").sort("user_id", "ts")
    by_user: dict[str, tuple[list[Any], list[str]]] = {}
    for user, frame in clicks.group_by("user_id"):
        by_user[str(user[0])] = (frame["ts"].to_list(), frame["item_id"].to_list())
    out = []
    for user, ts in zip(targets["user_id"].to_list(), targets["ts"].to_list()):
        times, ids = by_user.get(user, ([], []))
        cut = bisect_left(times, ts)  # events at exactly ts are not in the past
        out.append(ids[max(0, cut - k):cut])
    return out


def _interest_scores(blurb_texts: list[str | None], hists: list[list[str]], scorer: Any) -> list[float | None]:
    """Row-wise dot product of the blurb's and the user's vectors; computed once per unique text/history."""
    scores: list[float | None] = [None] * len(hists)
    rows = [i for i, (b, h) in enumerate(zip(blurb_texts, hists)) if b is not None and h]
    if not rows:
        return scores
    texts = sorted({blurb_texts[i] for i in rows})  # type: ignore[type-var]
    text_vecs = np.asarray(scorer.encode_texts(texts))
    text_at = {t: j for j, t in enumerate(texts)}
    keys = sorted({tuple(hists[i]) for i in rows})
    user_vecs = np.asarray(scorer.user_vectors([list(h) for h in keys]))
    hist_at = {h: j for j, h in enumerate(keys)}
    for i in rows:
        scores[i] = float(text_vecs[text_at[blurb_texts[i]]] @ user_vecs[hist_at[tuple(hists[i])]])
    return scores


@register(
    "blurb",
    specs=[
        FeatureSpec("blurb_interest", pl.Float32, "interest model's match of the item's blurb with the user's last 10 clicks"),
        FeatureSpec("blurb_words", pl.Int32, "words in the item's shown blurb"),
        FeatureSpec("blurb_fallback", pl.Int8, "1 when the shown blurb is the extractive fallback (or missing)"),
    ],
    requires=("blurbs", "interest"),
)
def blurb_features(ctx: FeatureContext) -> pl.DataFrame:
    blurbs = ctx.artefacts["blurbs"].select("item_id", "blurb", "source").unique("item_id", keep="last")
    rows = ctx.targets.select(*KEYS, "user_id", "ts").join(blurbs, on="item_id", how="left", maintain_order="left")
    scores = _interest_scores(rows["blurb"].to_list(), histories(rows, ctx.log), ctx.artefacts["interest"])
    return rows.select(
        *KEYS,
        blurb_interest=pl.Series(scores, dtype=pl.Float32),
        blurb_words=pl.col("blurb").str.count_matches(WORD).fill_null(0).cast(pl.Int32),
        blurb_fallback=(pl.col("source") != "generated").fill_null(True).cast(pl.Int8),
    )
