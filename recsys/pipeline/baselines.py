"""Baseline rankers behind the one scoring interface every model uses.

A scorer takes a frame of (request_id, user_id, item_id) pairs and returns one float per row,
higher = more relevant. Baselines are fitted on events before a cutoff only, or (FeatureScorer)
read a point-in-time feature column computed as of each request. `recsys evaluate` names them as
`recsys train` does (recsys/pipeline/evaluate.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import polars as pl


class BaselineScorer(Protocol):
    name: str

    def score(self, frame: pl.DataFrame) -> np.ndarray: ...


@dataclass(frozen=True)
class ItemTableScorer:
    """Scores every pair by a per-item value; items it never saw get `default`."""

    name: str
    table: pl.DataFrame  # item_id, value
    default: float = 0.0

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        joined = frame.select("item_id").join(self.table, on="item_id", how="left", maintain_order="left")
        return joined["value"].fill_null(self.default).to_numpy().astype(np.float64)


def fit_popularity(train: pl.DataFrame, window_days: float | None = None, name: str | None = None) -> ItemTableScorer:
    """Click counts per item, over the whole training period or its last `window_days`."""
    events = train
    if window_days is not None:
        end = train["ts"].max()
        events = train.filter(pl.col("ts") > end - timedelta(days=window_days))  # type: ignore[operator]
    table = events.group_by("item_id").agg(value=pl.col("clicked").cast(pl.Float64).sum())
    label = name or ("popularity" if window_days is None else f"popularity_{window_days:g}d")
    return ItemTableScorer(label, table)


def fit_recent_ctr(train: pl.DataFrame, half_life_days: float = 7.0, prior_strength: float = 20.0) -> ItemTableScorer:
    """Smoothed click-through rate with exponentially decayed counts, as of the end of training.

    ctr = (clicks + m * p0) / (impressions + m); an unseen item gets the global rate p0.
    """
    end: datetime = train["ts"].max()  # type: ignore[assignment]
    age_days = (pl.lit(end) - pl.col("ts")).dt.total_microseconds() / 86_400e6
    weight = (0.5 ** (age_days / half_life_days)).alias("w")
    weighted = train.select("item_id", "clicked", weight)
    p0 = float((weighted["w"] * weighted["clicked"]).sum() / max(weighted["w"].sum(), 1e-12))
    table = weighted.group_by("item_id").agg(
        value=((pl.col("w") * pl.col("clicked")).sum() + prior_strength * p0) / (pl.col("w").sum() + prior_strength)
    )
    return ItemTableScorer("recent_ctr", table, default=p0)


@dataclass(frozen=True)
class FeatureScorer:
    """Scores each (request, item) pair by one precomputed feature column (point in time), as
    `recsys train` ranks with its single-feature baselines; a pair without a value scores 0."""

    name: str
    column: str
    values: pl.DataFrame  # request_id, item_id, <column>

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        joined = frame.select("request_id", "item_id").join(self.values, on=["request_id", "item_id"], how="left",
                                                            maintain_order="left")
        return joined[self.column].fill_null(0.0).cast(pl.Float64).to_numpy()


@dataclass(frozen=True)
class OracleScorer:
    """The synthetic shop's true relevance (click probability without position bias)."""

    ground_truth: pl.DataFrame
    name: str = "oracle"

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        joined = frame.select("request_id", "item_id").join(
            self.ground_truth.select("request_id", "item_id", "relevance").unique(["request_id", "item_id"]),
            on=["request_id", "item_id"], how="left", maintain_order="left",
        )
        return joined["relevance"].fill_null(0.0).to_numpy()


@dataclass(frozen=True)
class RandomScorer:
    seed: int = 0
    name: str = "random"

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        return np.random.default_rng(self.seed).random(frame.height)
