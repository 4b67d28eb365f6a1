"""Point-in-time aggregates: sums over log events strictly before each target's ts.

Everything is an as-of join on cumulative sums, so a target at time t sees events in
[t - window, t) and nothing at or after t: adding future events cannot change a feature.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl


def sums_before(
    events: pl.DataFrame,
    targets: pl.DataFrame,
    by: list[str],
    values: list[str],
    window: timedelta | None = None,
    suffix: str = "",
) -> pl.DataFrame:
    """targets (with `by` columns and `ts`) + one column per value: the sum over events with the
    same `by` keys and ts in [ts - window, ts) (or (-inf, ts) without a window). Row order kept."""
    cum = (
        events.group_by([*by, "ts"]).agg(pl.col(v).cast(pl.Float64).sum() for v in values)
        .sort([*by, "ts"])
        .with_columns(pl.col(v).cum_sum().over(by).alias(f"_cum_{v}") for v in values)
        .select([*by, "ts", *[f"_cum_{v}" for v in values]])
        .sort("ts")
    )
    keyed = targets.select([*by, "ts"]).with_row_index("_row")

    def cum_at(moments: pl.DataFrame) -> pl.DataFrame:
        return moments.sort("ts").join_asof(
            cum, on="ts", by=by, strategy="backward", allow_exact_matches=False, check_sortedness=False
        ).sort("_row")

    now = cum_at(keyed)
    result = now.select("_row", *[pl.col(f"_cum_{v}").fill_null(0.0).alias(f"{v}{suffix}") for v in values])
    if window is not None:
        then = cum_at(keyed.with_columns(pl.col("ts") - window))
        result = result.with_columns(
            (pl.col(f"{v}{suffix}") - then[f"_cum_{v}"].fill_null(0.0)).alias(f"{v}{suffix}") for v in values
        )
    return targets.with_row_index("_row").join(result, on="_row", how="left").sort("_row").drop("_row")


def last_before(events: pl.DataFrame, targets: pl.DataFrame, by: list[str], name: str) -> pl.DataFrame:
    """targets + `name`: days since the latest event with the same `by` keys strictly before ts
    (null when there is none)."""
    latest = events.select([*by, "ts"]).unique().with_columns(_last=pl.col("ts")).sort("ts")
    joined = (
        targets.with_row_index("_row").sort("ts")
        .join_asof(latest, on="ts", by=by, strategy="backward", allow_exact_matches=False, check_sortedness=False)
        .sort("_row")
    )
    days = (pl.col("ts") - pl.col("_last")).dt.total_seconds() / 86_400.0
    return joined.with_columns(days.alias(name)).drop("_row", "_last")
