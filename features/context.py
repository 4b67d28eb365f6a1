"""Features that place a candidate among the candidates it competes with (one request).

The same ranker serves a page of a dozen mostly-new items and a whole catalog of thousands: how
many candidates there are and how many are new tell the two jobs apart, and an item's rank by age,
popularity, trend, text match and collaborative score within its request is comparable across
both. Derived from the other groups' columns of the same request, so training and serving compute
them in one place (a column a run does not have gives nulls).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.registry import KEYS, Columns, FeatureSpec, MomentValues, derived_values, register_derived

F32 = pl.Float32
RANKED = {  # feature -> the column ranked within the request (ascending; 1 = the largest value)
    "rank_age": "item_age_days",
    "rank_clicks": "item_clicks_all",
    "rank_recent": "item_clicks_recent",
    "rank_interest": "interest_score",
    "rank_interest_max": "interest_max",
    "rank_cf": "cf_score",
    "rank_topic": "user_topic_ctr",
}


@register_derived(
    "request_context",
    [
        FeatureSpec("request_candidates", F32, "how many candidates the request ranks"),
        FeatureSpec("request_new_share", F32, "share of the request's candidates never shown before"),
        *[FeatureSpec(name, F32, f"{column}'s rank within the request, scaled to (0, 1] (1 = largest)")
          for name, column in RANKED.items()],
        FeatureSpec("interest_gap", F32, "interest_score minus the request's best interest_score"),
    ],
)
def request_context(frame: pl.DataFrame) -> pl.DataFrame:
    request = pl.col("request_id")
    size = pl.len().over(request).cast(pl.Float64)

    def have(column: str) -> bool:
        return column in frame.columns

    def scaled_rank(column: str) -> pl.Expr:
        if not have(column):
            return pl.lit(None, dtype=pl.Float64)
        value = pl.col(column).cast(pl.Float64).fill_null(0.0)
        return value.rank("average").over(request) / size

    new_share = pl.col("item_is_new").cast(pl.Float64).mean().over(request) if have("item_is_new") else pl.lit(None)
    gap = (pl.col("interest_score") - pl.col("interest_score").max().over(request)) if have("interest_score") else pl.lit(None)
    return frame.select(
        *KEYS,
        request_candidates=size,
        request_new_share=new_share,
        **{name: scaled_rank(column) for name, column in RANKED.items()},
        interest_gap=gap,
    )


def _rank_average(values: np.ndarray, request: np.ndarray) -> np.ndarray:
    """Per row, its value's 1-based rank within its request, ties sharing the average of their
    ranks (polars' `rank("average")`), as float64. `values` (n,) or (n, k): k columns ranked at
    once (one sort for all of them; a request ranks seven)."""
    matrix = np.asarray(values, dtype=np.float64)
    if len(matrix) == 0:
        return np.zeros(matrix.shape)
    v2 = matrix.reshape(len(matrix), -1)
    n, k = v2.shape
    order = np.lexsort((v2, np.broadcast_to(request[:, None], (n, k))), axis=0)  # by request, then value
    v, r = np.take_along_axis(v2, order, 0), request[order]
    new_run = np.ones((n, k), dtype=bool)  # a run of equal values in one request
    new_run[1:] = (r[1:] != r[:-1]) | (v[1:] != v[:-1])
    by_request = np.sort(request, kind="stable")  # every column's rows sort to the same request blocks
    request_start = np.flatnonzero(np.append(True, by_request[1:] != by_request[:-1]))
    position = np.arange(n) - np.repeat(request_start, np.diff(np.append(request_start, n))) + 1
    at = np.arange(n)[:, None]
    first = np.maximum.accumulate(np.where(new_run, at, 0), axis=0)  # the run's first row, in sorted order
    ends = np.ones((n, k), dtype=bool)
    ends[:-1] = new_run[1:]
    last = np.minimum.accumulate(np.where(ends, at, n)[::-1], axis=0)[::-1]  # runs never span two requests
    ranks = np.empty((n, k), dtype=np.float64)
    np.put_along_axis(ranks, order, (position[first] + position[last]) / 2.0, 0)
    return ranks.reshape(matrix.shape)


@derived_values("request_context")
def request_context_values(cols: Columns) -> MomentValues:
    """`request_context` in numpy (serving and batch scoring; tests/test_moment.py compares)."""
    request = cols.request
    sizes = np.bincount(request, minlength=cols.requests).astype(np.float64)
    size = sizes[request]
    n = len(request)

    def filled(column: str) -> np.ndarray:
        values = cols.values[column]
        nulls = cols.nulls.get(column)
        return np.where(nulls, 0.0, values) if nulls is not None else values

    # a column the run does not have gives nulls, as in the polars group
    out: dict[str, np.ndarray | pl.Series] = {"request_candidates": size}
    if "item_is_new" in cols.values:
        new = cols.values["item_is_new"]
        nulls = cols.nulls.get("item_is_new")
        counted = ~nulls if nulls is not None else np.ones(n, dtype=bool)  # a mean skips nulls
        share = np.bincount(request, np.where(counted, new, 0.0), cols.requests) / np.bincount(request, counted, cols.requests)
        out["request_new_share"] = share[request]
    else:
        out["request_new_share"] = pl.Series([None] * n, dtype=pl.Float64)
    present = {name: column for name, column in RANKED.items() if column in cols.values}
    if present:
        ranks = _rank_average(np.column_stack([filled(column) for column in present.values()]), request) / size[:, None]
        out.update({name: ranks[:, j] for j, name in enumerate(present)})
    for name in RANKED.keys() - present.keys():
        out[name] = pl.Series([None] * n, dtype=pl.Float64)
    if "interest_score" in cols.values:
        # in the column's own float32, as polars subtracts two Float32 columns
        score = cols.values["interest_score"].astype(np.float32)
        nulls = cols.nulls.get("interest_score")
        best = np.full(cols.requests, -np.inf, dtype=np.float32)
        np.maximum.at(best, request, np.where(nulls, -np.inf, score) if nulls is not None else score)
        gap = score - best[request]
        out["interest_gap"] = pl.Series(gap).scatter(np.flatnonzero(nulls), None) if nulls is not None else gap
    else:
        out["interest_gap"] = pl.Series([None] * n, dtype=pl.Float32)
    return out
