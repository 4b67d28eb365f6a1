"""Blurb features for the ranker: how well the item's shown blurb matches the user's history
(scored by the interest model), the blurb's length, and whether it is a fallback.

History of a target row = the user's clicked item ids with ts strictly before the row's ts, most
recent last, at most the interest model's history length. A row with no history gets a null interest score (missing for the
ranker); an item without a blurb row gets null score and length 0 and fallback 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from features.history import click_histories, rows_by_history
from features.registry import KEYS, FeatureContext, FeatureSpec, MomentContext, MomentValues, at_moment, register
from features.text import histories_at, history_length
from features.vectors import paired_scores

WORD = r"[A-Za-z][A-Za-z'-]*|\d+(?:[.,]\d+)?"  # the same word rule as the blurb length checks


def histories(targets: pl.DataFrame, log: pl.DataFrame, k: int) -> list[list[str]]:
    """Per target row, the user's last k clicked item ids strictly before the row's ts (oldest first)."""
    found = click_histories(log, targets, k)
    rows = targets.select("user_id", "ts").join(found, on=["user_id", "ts"], how="left", maintain_order="left")
    return [h if h is not None else [] for h in rows["history"].to_list()]


def _interest_scores(blurb_texts: list[str | None], hists: list[list[str]], scorer: Any) -> list[float | None]:
    """Row-wise dot product of the blurb's and the user's vectors; computed once per unique text/history."""
    scores: list[float | None] = [None] * len(hists)
    rows = [i for i, (b, h) in enumerate(zip(blurb_texts, hists)) if b is not None and h]
    if not rows:
        return scores
    texts = sorted({blurb_texts[i] for i in rows})  # type: ignore[type-var]
    text_vecs = np.asarray(scorer.encode_texts(texts))
    text_at = {t: j for j, t in enumerate(texts)}
    by_history = rows_by_history([hists[i] for i in rows])  # positions in `rows`
    keys = sorted(by_history)
    user_vecs = np.asarray(scorer.user_vectors([list(h) for h in keys]))
    which = np.empty(len(rows), dtype=np.int64)
    for j, key in enumerate(keys):
        which[by_history[key]] = j
    text_rows = np.array([text_at[blurb_texts[i]] for i in rows], dtype=np.int64)
    for i, score in zip(rows, paired_scores(user_vecs, which, text_vecs.__getitem__, text_rows).tolist()):
        scores[i] = score
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
    rows = _with_blurbs(ctx.targets.select(*KEYS, "user_id", "ts"), ctx.artefacts["blurbs"])
    scores = _interest_scores(
        rows["blurb"].to_list(), histories(rows, ctx.log, history_length(ctx.artefacts["interest"])), ctx.artefacts["interest"]
    )
    return rows.select(*KEYS, blurb_interest=pl.Series(scores, dtype=pl.Float32), **_blurb_shape())


@at_moment("blurb")
def blurb_features_at(ctx: MomentContext) -> MomentValues:
    shown = _shown_by_item(ctx.artefacts["blurbs"])
    rows = [shown.get(item, (None, 0, 1)) for item in ctx.item_ids]  # no blurb: 0 words, fallback
    scores = _interest_scores([r[0] for r in rows], histories_at(ctx, history_length(ctx.artefacts["interest"])), ctx.artefacts["interest"])
    missing = np.array([v is None for v in scores], dtype=bool)
    interest = np.ma.masked_array(np.array([np.nan if v is None else v for v in scores], dtype=np.float64), mask=missing)
    return {"blurb_interest": interest.astype(np.float32), "blurb_words": np.array([r[1] for r in rows], dtype=np.int32),
            "blurb_fallback": np.array([r[2] for r in rows], dtype=np.int8)}


_SHOWN: dict[int, tuple[pl.DataFrame, dict[str, tuple[str | None, int, int]]]] = {}


def _shown_by_item(blurbs: pl.DataFrame) -> dict[str, tuple[str | None, int, int]]:
    """item_id -> (shown blurb, blurb_words, blurb_fallback), made once per blurbs frame (a
    serving request used to join the frame and count words: ~2 ms). The entry holds the frame,
    so its id is not reused while cached."""
    hit = _SHOWN.get(id(blurbs))
    if hit is None or hit[0] is not blurbs:
        shown = _with_blurbs(blurbs.select("item_id").unique(), blurbs).select("item_id", "blurb", **_blurb_shape())
        if len(_SHOWN) >= 8:  # a few runs per process at most (A/B arms, hot swaps)
            _SHOWN.clear()
        hit = _SHOWN[id(blurbs)] = (blurbs, {r[0]: (r[1], r[2], r[3]) for r in shown.iter_rows()})
    return hit[1]


def _with_blurbs(rows: pl.DataFrame, blurbs: pl.DataFrame) -> pl.DataFrame:
    shown = blurbs.select("item_id", "blurb", "source").unique("item_id", keep="last")
    return rows.join(shown, on="item_id", how="left", maintain_order="left")


def _blurb_shape() -> dict[str, pl.Expr]:
    return {
        "blurb_words": pl.col("blurb").str.count_matches(WORD).fill_null(0).cast(pl.Int32),
        "blurb_fallback": (pl.col("source") != "generated").fill_null(True).cast(pl.Int8),
    }
