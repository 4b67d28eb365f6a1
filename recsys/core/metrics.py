"""Per-request ranking metrics (MIND conventions), vectorised in polars.

Input: one row per (request, item) with a binary `label` and a model `score`. Requests without a
click carry no signal and are left out; AUC also needs at least one non-click. Ties in `score`
are broken by a fixed hash of (request_id, item_id), so a constant scorer is as good as random,
not as good as the log's order. The known-answer tests check every metric against scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import bootstrap


def ranked(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `rank` (1 = best) within each request."""
    tie_break = pl.struct("request_id", "item_id").hash(seed=17)
    return (
        frame.with_columns(_tie=tie_break)
        .sort(["request_id", "score", "_tie"], descending=[False, True, False])
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("request_id"))
        .drop("_tie")
    )


def per_request(frame: pl.DataFrame, ks: tuple[int, ...] = (5, 10)) -> pl.DataFrame:
    """One row per request with a click: auc, mrr, mrr@k, ndcg@k, recall@k."""
    df = ranked(frame.select("request_id", "item_id", pl.col("label").cast(pl.Float64), pl.col("score").cast(pl.Float64)))
    df = df.with_columns(
        n_pos=pl.col("label").sum().over("request_id"),
        n=pl.len().over("request_id"),
        # average rank of the score in ascending order: ties share it, as in Mann-Whitney U
        score_rank=pl.col("score").rank("average").over("request_id"),
        discount=1.0 / (pl.col("rank") + 1).cast(pl.Float64).log(2),
    ).filter(pl.col("n_pos") > 0)
    n_neg = pl.col("n") - pl.col("n_pos")
    aggs = [
        pl.col("n_pos").first(),
        pl.col("n").first(),
        pl.when(n_neg.first() > 0)
        .then(
            ((pl.col("score_rank") * pl.col("label")).sum() - pl.col("n_pos").first() * (pl.col("n_pos").first() + 1) / 2)
            / (pl.col("n_pos").first() * n_neg.first())
        )
        .otherwise(None)
        .alias("auc"),
        ((pl.col("label") / pl.col("rank")).sum() / pl.col("n_pos").first()).alias("mrr"),
    ]
    for k in ks:
        top = pl.col("rank") <= k
        ideal = pl.int_range(1, pl.min_horizontal(pl.col("n_pos").first(), k).cast(pl.Int64) + 1)
        aggs += [
            ((pl.col("label") * pl.col("discount")).filter(top).sum()
             / (1.0 / (ideal + 1).cast(pl.Float64).log(2)).sum()).alias(f"ndcg@{k}"),
            (pl.col("label").filter(top).sum() / pl.col("n_pos").first()).alias(f"recall@{k}"),
            (1.0 / pl.col("rank").filter(top & (pl.col("label") > 0)).min()).fill_null(0.0).alias(f"mrr@{k}"),
        ]
    return df.group_by("request_id").agg(aggs).sort("request_id")


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int


def mean_with_ci(values: np.ndarray, confidence: float = 0.95, resamples: int = 1000, seed: int = 0) -> Estimate:
    """Mean over requests with a percentile bootstrap confidence interval."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if values.size == 1 or np.all(values == values[0]):
        return Estimate(float(values.mean()), float(values.mean()), float(values.mean()), int(values.size))
    ci = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=confidence,
                   method="percentile", random_state=seed, vectorized=True).confidence_interval
    return Estimate(float(values.mean()), float(ci.low), float(ci.high), int(values.size))


METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10", "recall@10", "mrr@10")


def summarize(per_req: pl.DataFrame, metrics: tuple[str, ...] = METRICS, resamples: int = 1000) -> dict[str, Estimate]:
    return {m: mean_with_ci(per_req[m].to_numpy(), resamples=resamples) for m in metrics if m in per_req.columns}


def metric_key(name: str) -> str:
    """MLflow refuses '@' in metric names: ndcg@10 -> ndcg_at_10."""
    return name.replace("@", "_at_")
