"""Time-based splits: a request belongs to the period of its first impression, never split."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from recsys.core.errors import RecsysInputError


@dataclass(frozen=True)
class SplitConfig:
    valid_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass(frozen=True)
class Split:
    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame
    valid_start: datetime
    test_start: datetime


def request_starts(events: pl.DataFrame) -> pl.DataFrame:
    return events.group_by("request_id").agg(start=pl.col("ts").min())


def time_split(events: pl.DataFrame, cfg: SplitConfig = SplitConfig()) -> Split:
    """Cut by quantiles of request start times: train < valid_start <= valid < test_start <= test."""
    if not 0 <= cfg.valid_fraction < 1 or not 0 < cfg.test_fraction < 1 or cfg.valid_fraction + cfg.test_fraction >= 1:
        raise RecsysInputError(
            f"split: valid_fraction={cfg.valid_fraction}, test_fraction={cfg.test_fraction}; expected "
            "0 <= valid, 0 < test and valid + test < 1"
        )
    starts = request_starts(events)
    if starts.height < 3:
        raise RecsysInputError(f"split: {starts.height} request(s); need at least 3 to split by time")
    test_start = starts["start"].quantile(1 - cfg.test_fraction, "higher")
    valid_start = starts["start"].quantile(1 - cfg.test_fraction - cfg.valid_fraction, "higher")
    tagged = events.join(starts, on="request_id")
    train = tagged.filter(pl.col("start") < valid_start).drop("start")
    valid = tagged.filter((pl.col("start") >= valid_start) & (pl.col("start") < test_start)).drop("start")
    test = tagged.filter(pl.col("start") >= test_start).drop("start")
    return Split(train, valid, test, valid_start, test_start)  # type: ignore[arg-type]
