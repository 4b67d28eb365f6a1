"""Offline evaluation: re-rank each test request's shown items and score the ranking.

The popularity baselines are the very scorers `recsys train` reports under the same names
(`recsys.pipeline.train.BASELINES`): the point-in-time behavioural feature columns on the same test
requests, so `popularity` or `recent_popularity_7d` gives the same figure in both tables.
`random` and `recent_ctr` (a decayed, smoothed CTR fitted at the end of the history) exist only
here; `interest_alone` and `cf_alone` need a trained run and exist only in `recsys train`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from recsys.core.dataset import Dataset
from recsys.core.metrics import METRICS, per_request, summarize
from recsys.core.splits import Split, SplitConfig, time_split
from recsys.pipeline.baselines import BaselineScorer, FeatureScorer, OracleScorer, RandomScorer, fit_recent_ctr

log = logging.getLogger(__name__)
# the feature groups behind train's popularity baselines
BASELINE_GROUPS = ("item_popularity", "item_trend")


def test_targets(split: Split) -> pl.DataFrame:
    """The test requests as `recsys train` judges them (task "impressions"): one row per shown
    item, a repeat in one request counted once, ranked as of the request's first impression."""
    from recsys.core.targets import impression_targets

    return impression_targets(split.test)


def feature_baselines(data: Dataset, split: Split, targets: pl.DataFrame) -> list[BaselineScorer]:
    """train's single-feature baselines (popularity, recent_popularity_1d/_7d, recent_popularity)
    computed point in time for `targets`, with the recent window the pipeline uses (the valid
    period's length)."""
    from features.behavioural import RECENT_US_KEY
    from features.groups import resolve
    from features.registry import FeatureContext, compute_features
    from recsys.pipeline.train import BASELINES

    recent_us = max(int((split.test_start - split.valid_start) / timedelta(microseconds=1)), 1)
    ctx = FeatureContext(targets.select("request_id", "user_id", "item_id", "ts"), data.events, data.items,
                         {"time_scale": {RECENT_US_KEY: recent_us}})
    frame = compute_features(resolve(list(BASELINE_GROUPS)), ctx)
    return [FeatureScorer(name, column, frame.select("request_id", "item_id", column))
            for name, column in BASELINES.items() if column in frame.columns]


def baseline_scorers(data: Dataset, split: Split, targets: pl.DataFrame) -> list[BaselineScorer]:
    """Every baseline of the test period, fitted on (or computed from) what precedes each request."""
    history = pl.concat([split.train, split.valid])
    scorers: list[BaselineScorer] = [RandomScorer(), *feature_baselines(data, split, targets), fit_recent_ctr(history)]
    if data.ground_truth is not None:
        scorers.append(OracleScorer(data.ground_truth))
    return scorers


def score_requests(scorer: BaselineScorer, targets: pl.DataFrame) -> pl.DataFrame:
    frame = targets.select("request_id", "user_id", "item_id", "label")
    return frame.with_columns(score=pl.Series(scorer.score(frame), dtype=pl.Float64))


def evaluate_scorers(scorers: Sequence[BaselineScorer], targets: pl.DataFrame, resamples: int = 1000) -> pl.DataFrame:
    """One row per scorer: the mean of each metric over test requests and a 95% CI for each.
    `targets`: request_id, user_id, item_id, label (`test_targets`)."""
    rows = []
    for scorer in scorers:
        log.info("evaluating %s on %d test impressions", scorer.name, targets.height)
        per_req = per_request(score_requests(scorer, targets))
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
    targets = test_targets(split)
    table = evaluate_scorers(baseline_scorers(data, split, targets), targets, resamples)
    return split, table.sort("ndcg@10", descending=True)
