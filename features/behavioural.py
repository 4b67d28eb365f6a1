"""Behavioural feature groups: item popularity and CTR, user activity, user taste, position."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from features.pointintime import global_totals, last_before, sums_before, sums_over, totals_before
from features.registry import KEYS, FeatureContext, FeatureSpec, register

F32 = pl.Float32
PRIOR_IMPRESSIONS = 20.0  # smoothing strength: a CTR counts as this many impressions at the global rate


def _smoothed_ctr(clicks: pl.Expr, shown: pl.Expr) -> pl.Expr:
    """Shrinks a CTR towards `_prior`, the global CTR before the target's ts."""
    return (clicks + PRIOR_IMPRESSIONS * pl.col("_prior")) / (shown + PRIOR_IMPRESSIONS)


def _totals(ctx: FeatureContext) -> pl.DataFrame:
    """The log's running totals: precomputed by the caller (serving passes them with a log cut
    down to one user's and the candidates' events) or computed here from the full log."""
    return ctx.totals if ctx.totals is not None else global_totals(ctx.log)


def _with_prior(totals: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """targets + `_prior`: the global click rate of the log strictly before each target's ts
    (a prior over the whole log would leak the future into every CTR)."""
    every = totals_before(totals, targets)
    prior = (every["clicks"] / every["shown"]).fill_nan(0.0).fill_null(0.0)
    return targets.with_columns(_prior=prior)


def _counts(log: pl.DataFrame) -> pl.DataFrame:
    return log.select("user_id", "item_id", "ts", clicks=pl.col("clicked").cast(pl.Float64), shown=pl.lit(1.0))


@register(
    "item_popularity",
    [
        FeatureSpec("item_clicks_1d", F32, "clicks on the item in the last day"),
        FeatureSpec("item_clicks_7d", F32, "clicks on the item in the last 7 days"),
        FeatureSpec("item_clicks_all", F32, "clicks on the item ever"),
        FeatureSpec("item_shown_7d", F32, "impressions of the item in the last 7 days"),
        FeatureSpec("item_ctr_7d", F32, "smoothed CTR of the item over 7 days"),
        FeatureSpec("item_ctr_all", F32, "smoothed CTR of the item ever"),
        FeatureSpec("item_click_share_7d", F32, "the item's share of all clicks in the last 7 days"),
        FeatureSpec("item_days_since_click", F32, "days since the item's last click (null: never)"),
        FeatureSpec("item_age_days", F32, "days since the item was created or first shown"),
    ],
)
def item_popularity(ctx: FeatureContext) -> pl.DataFrame:
    log, totals = _counts(ctx.log), _totals(ctx)
    t = _with_prior(totals, ctx.targets.select(*KEYS, "ts"))
    day, week = timedelta(days=1), timedelta(days=7)
    out = sums_over(log, t, ["item_id"], ["clicks", "shown"], {"_1d": day, "_7d": week, "_all": None})
    out = out.with_columns(_total_7d=totals_before(totals, t, week)["clicks"])
    out = last_before(ctx.log.filter(pl.col("clicked") == 1), out, ["item_id"], "item_days_since_click")
    wanted = ctx.targets.select("item_id").unique()
    first_seen = ctx.log.join(wanted, on="item_id", how="semi").group_by("item_id").agg(first=pl.col("ts").min())
    catalog = ctx.items.join(wanted, on="item_id", how="semi")
    born = catalog.select("item_id", "created_at").join(first_seen, on="item_id", how="full", coalesce=True)
    born = born.select("item_id", since=pl.coalesce("created_at", "first"))
    out = out.join(born, on="item_id", how="left", maintain_order="left")
    return out.select(
        *KEYS,
        item_clicks_1d="clicks_1d",
        item_clicks_7d="clicks_7d",
        item_clicks_all="clicks_all",
        item_shown_7d="shown_7d",
        item_ctr_7d=_smoothed_ctr(pl.col("clicks_7d"), pl.col("shown_7d")),
        item_ctr_all=_smoothed_ctr(pl.col("clicks_all"), pl.col("shown_all")),
        item_click_share_7d=pl.col("clicks_7d") / pl.max_horizontal(pl.col("_total_7d"), pl.lit(1.0)),
        item_days_since_click="item_days_since_click",
        item_age_days=(pl.col("ts") - pl.col("since")).dt.total_seconds() / 86_400.0,
    )


@register(
    "user_activity",
    [
        FeatureSpec("user_shown_all", F32, "impressions the user has seen"),
        FeatureSpec("user_clicks_all", F32, "clicks the user has made"),
        FeatureSpec("user_ctr", F32, "the user's smoothed CTR"),
        FeatureSpec("user_days_since_click", F32, "days since the user's last click (null: never)"),
    ],
)
def user_activity(ctx: FeatureContext) -> pl.DataFrame:
    log = _counts(ctx.log)
    t = _with_prior(_totals(ctx), ctx.targets.select(*KEYS, "user_id", "ts"))
    out = sums_before(log, t, ["user_id"], ["clicks", "shown"], None)
    out = last_before(ctx.log.filter(pl.col("clicked") == 1), out, ["user_id"], "user_days_since_click")
    return out.select(
        *KEYS,
        user_shown_all="shown",
        user_clicks_all="clicks",
        user_ctr=_smoothed_ctr(pl.col("clicks"), pl.col("shown")),
        user_days_since_click="user_days_since_click",
    )


@register(
    "user_affinity",
    [
        FeatureSpec("user_category_clicks", F32, "the user's clicks on items of this item's category"),
        FeatureSpec("user_category_share", F32, "share of the user's clicks in this category (smoothed)"),
        FeatureSpec("user_category_ctr", F32, "the user's smoothed CTR on this category"),
        FeatureSpec("user_item_shown", F32, "times this item was shown to the user before"),
        FeatureSpec("user_item_clicks", F32, "times the user clicked this item before"),
    ],
)
def user_affinity(ctx: FeatureContext) -> pl.DataFrame:
    category = ctx.items.select("item_id", category=pl.col("category").fill_null("?"))
    log = _counts(ctx.log).join(category, on="item_id", how="left").with_columns(pl.col("category").fill_null("?"))
    t = ctx.targets.select(*KEYS, "user_id", "ts").join(category, on="item_id", how="left", maintain_order="left")
    t = _with_prior(_totals(ctx), t.with_columns(pl.col("category").fill_null("?")))
    n_categories = max(category["category"].n_unique(), 1)
    out = sums_before(log, t, ["user_id", "category"], ["clicks", "shown"], None, "_cat")
    out = sums_before(log, out, ["user_id"], ["clicks"], None, "_user")
    out = sums_before(log, out, ["user_id", "item_id"], ["clicks", "shown"], None, "_item")
    return out.select(
        *KEYS,
        user_category_clicks="clicks_cat",
        user_category_share=(pl.col("clicks_cat") + 1.0 / n_categories) / (pl.col("clicks_user") + 1.0),
        user_category_ctr=_smoothed_ctr(pl.col("clicks_cat"), pl.col("shown_cat")),
        user_item_shown="shown_item",
        user_item_clicks="clicks_item",
    )


@register("position", [FeatureSpec("position", F32, "slot the item was shown in (re-ranking logs only; null when unknown)")])
def position(ctx: FeatureContext) -> pl.DataFrame:
    if "position" in ctx.targets.columns:
        return ctx.targets.select(*KEYS, position=pl.col("position"))
    return ctx.targets.select(*KEYS, position=pl.lit(None, dtype=F32))
