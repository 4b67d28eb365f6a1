"""Features that place a candidate among the candidates it competes with (one request).

The same ranker serves a page of a dozen mostly-new items and a whole catalog of thousands: how
many candidates there are and how many are new tell the two jobs apart, and an item's rank by age,
popularity, trend, text match and collaborative score within its request is comparable across
both. Derived from the other groups' columns of the same request, so training and serving compute
them in one place (a column a run does not have gives nulls).
"""

from __future__ import annotations

import polars as pl

from features.registry import KEYS, FeatureSpec, register_derived

F32 = pl.Float32
RANKED = {  # feature -> the column ranked within the request (ascending; 1 = the largest value)
    "rank_age": "item_age_days",
    "rank_clicks": "item_clicks_all",
    "rank_recent": "item_clicks_recent",
    "rank_interest": "interest_score",
    "rank_interest_max": "interest_max",
    "rank_cf": "cf_score",
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
