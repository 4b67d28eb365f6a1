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
    return sums_over(events, targets, by, values, {suffix: window})


def sums_over(
    events: pl.DataFrame,
    targets: pl.DataFrame,
    by: list[str],
    values: list[str],
    windows: dict[str, timedelta | None],
) -> pl.DataFrame:
    """`sums_before` for several windows at once (column `{value}{suffix}` per window), sharing
    one running-sum table: online serving pays per polars call, not per row."""
    # only the targets' keys matter; online serving passes a handful of keys and a big log
    keys = events.join(targets.select(by).unique(), on=by, how="semi")
    # sorting by ts alone (not by the string keys) is enough: cum_sum().over() follows row order
    cum = (
        keys.group_by([*by, "ts"]).agg(pl.col(v).cast(pl.Float64).sum() for v in values)
        .sort("ts")
        .select([*by, "ts", *[pl.col(v).cum_sum().over(by).alias(f"_cum_{v}") for v in values]])
    )
    keyed = targets.select([*by, "ts"]).with_row_index("_row")

    def cum_at(moments: pl.DataFrame) -> pl.DataFrame:
        return moments.sort("ts").join_asof(
            cum, on="ts", by=by, strategy="backward", allow_exact_matches=False, check_sortedness=False
        ).sort("_row")

    now = cum_at(keyed)
    columns = []
    for suffix, window in windows.items():
        sums = [now[f"_cum_{v}"].fill_null(0.0) for v in values]
        if window is not None:
            then = cum_at(keyed.with_columns(pl.col("ts") - window))
            sums = [s - then[f"_cum_{v}"].fill_null(0.0) for s, v in zip(sums, values)]
        columns += [s.alias(f"{v}{suffix}") for s, v in zip(sums, values)]
    return targets.with_columns(columns)


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


def global_totals(log: pl.DataFrame) -> pl.DataFrame:
    """The whole log's running click and impression counts: (ts, _cum_clicks, _cum_shown) per
    distinct ts, sorted. Computed once and shared by every feature that needs a global rate."""
    return (
        log.group_by("ts").agg(clicks=pl.col("clicked").cast(pl.Float64).sum(), shown=pl.len().cast(pl.Float64))
        .sort("ts")
        .select("ts", _cum_clicks=pl.col("clicks").cum_sum(), _cum_shown=pl.col("shown").cum_sum())
    )


def totals_before(totals: pl.DataFrame, targets: pl.DataFrame, window: timedelta | None = None) -> pl.DataFrame:
    """For each target row (in order): `clicks` and `shown` over the whole log with ts in
    [ts - window, ts) (or (-inf, ts)), read from `global_totals`."""
    keyed = targets.select("ts").with_row_index("_row")

    def cum_at(moments: pl.DataFrame) -> pl.DataFrame:
        return moments.sort("ts").join_asof(
            totals, on="ts", strategy="backward", allow_exact_matches=False, check_sortedness=False
        ).sort("_row").select(pl.col("_cum_clicks").fill_null(0.0), pl.col("_cum_shown").fill_null(0.0))

    now = cum_at(keyed)
    clicks, shown = now["_cum_clicks"], now["_cum_shown"]
    if window is not None:
        then = cum_at(keyed.with_columns(pl.col("ts") - window))
        clicks, shown = clicks - then["_cum_clicks"], shown - then["_cum_shown"]
    return pl.DataFrame({"clicks": clicks, "shown": shown})
