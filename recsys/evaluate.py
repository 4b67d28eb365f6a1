"""Offline evaluation: re-rank each test request's shown items and score the ranking."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import polars as pl

from recsys.baselines import OracleScorer, RandomScorer, Scorer, fit_popularity, fit_recent_ctr
from recsys.dataset import Dataset
from recsys.metrics import METRICS, per_request, summarize
from recsys.splits import Split, SplitConfig, time_split

log = logging.getLogger(__name__)


def baseline_scorers(data: Dataset, history: pl.DataFrame) -> list[Scorer]:
    """Baselines fitted on `history` (everything before the test period)."""
    scorers: list[Scorer] = [
        RandomScorer(),
        fit_popularity(history),
        fit_popularity(history, window_days=7),
        fit_recent_ctr(history),
    ]
    if data.ground_truth is not None:
        scorers.append(OracleScorer(data.ground_truth))
    return scorers


def score_requests(scorer: Scorer, test: pl.DataFrame) -> pl.DataFrame:
    frame = test.select("request_id", "user_id", "item_id", label=pl.col("clicked"))
    return frame.with_columns(score=pl.Series(scorer.score(frame), dtype=pl.Float64))


def evaluate_scorers(scorers: Sequence[Scorer], test: pl.DataFrame, resamples: int = 1000) -> pl.DataFrame:
    """One row per scorer: the mean of each metric over test requests and a 95% CI for each."""
    rows = []
    for scorer in scorers:
        log.info("evaluating %s on %d test impressions", scorer.name, test.height)
        per_req = per_request(score_requests(scorer, test))
        summary = summarize(per_req, resamples=resamples)
        row: dict[str, object] = {"model": scorer.name, "requests": per_req.height}
        for metric in METRICS:
            est = summary[metric]
            row[metric] = est.mean
            row[f"{metric}_low"] = est.low
            row[f"{metric}_high"] = est.high
        rows.append(row)
    return pl.DataFrame(rows)


def evaluate_baselines(data: Dataset, split_cfg: SplitConfig = SplitConfig(), resamples: int = 1000) -> tuple[Split, pl.DataFrame]:
    split = time_split(data.events, split_cfg)
    history = pl.concat([split.train, split.valid])
    table = evaluate_scorers(baseline_scorers(data, history), split.test, resamples)
    return split, table.sort("ndcg@10", descending=True)
