"""Ranking groups: the (request, item) rows a ranker learns from or is judged on.

Two shapes, matching the two jobs the ranker does:
- impressions: a logged request's shown items (re-rank what the shop shows), label = clicked;
- catalog: for a user at a cutoff, every catalog item they had not interacted with, label =
  clicked within the following horizon (rank the whole catalog, as CONTRACT.md's `score`).
Every group row has `ts` = the moment of ranking; features may only look before it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl


def impression_targets(events: pl.DataFrame) -> pl.DataFrame:
    """One row per shown item; ts = the request's first impression, so a request sees nothing of itself."""
    start = events.group_by("request_id").agg(_start=pl.col("ts").min())
    return (
        events.join(start, on="request_id")
        .select("request_id", "user_id", "item_id", ts=pl.col("_start"), position="position", label=pl.col("clicked").cast(pl.Int32),
                shape=pl.lit("impressions"))
        .unique(["request_id", "item_id"], keep="first", maintain_order=True)  # a repeat in one request counts once
        .sort("request_id", "item_id")
    )


def catalog_items(items: pl.DataFrame, before: datetime, log: pl.DataFrame | None = None) -> pl.DataFrame:
    """Catalog items that exist at `before`: created before it, or, without created_at, shown
    before it in `log` (an item the log first shows later did not exist yet; counting it as a
    candidate that nobody clicked would teach the ranker that new items are bad). Without a log,
    no created_at = always existed."""
    created = pl.col("created_at").is_not_null() & (pl.col("created_at") < before)
    if log is None:
        return items.filter(pl.col("created_at").is_null() | created).select("item_id")
    shown = log.filter(pl.col("ts") < before).select("item_id").unique()
    undated = items.filter(pl.col("created_at").is_null()).join(shown, on="item_id", how="semi")
    return pl.concat([items.filter(created).select("item_id"), undated.select("item_id")]).unique(maintain_order=True)


def catalog_targets(
    log: pl.DataFrame,
    items: pl.DataFrame,
    cutoff: datetime,
    horizon_end: datetime,
    *,
    tag: str,
    max_users: int,
    max_items: int | None,
    seed: int,
    min_user_events: int = 1,
) -> pl.DataFrame:
    """Groups for users active before `cutoff` who click in [cutoff, horizon_end).

    Candidates: catalog items that exist by horizon_end and the user had not interacted with
    before the cutoff; label 1 = clicked in the horizon. With `max_items`, negatives are sampled
    down to that many per group (positives always kept).
    """
    past = log.filter(pl.col("ts") < cutoff)
    future_clicks = log.filter((pl.col("ts") >= cutoff) & (pl.col("ts") < horizon_end) & (pl.col("clicked") == 1))
    active = past.group_by("user_id").len().filter(pl.col("len") >= min_user_events).select("user_id")
    users = future_clicks.select("user_id").unique().join(active, on="user_id").sort("user_id")
    if users.height > max_users:
        users = users.sample(max_users, seed=seed).sort("user_id")
    candidates = catalog_items(items, horizon_end, log)
    seen = past.select("user_id", "item_id").unique()
    pairs = users.join(candidates, how="cross").join(seen, on=["user_id", "item_id"], how="anti")
    positives = future_clicks.select("user_id", "item_id").unique().with_columns(label=pl.lit(1, dtype=pl.Int32))
    pairs = pairs.join(positives, on=["user_id", "item_id"], how="left").with_columns(pl.col("label").fill_null(0))
    return _groups(_sampled(pairs, max_items, seed), tag, pl.lit(cutoff), "catalog")


def _sampled(pairs: pl.DataFrame, max_items: int | None, seed: int) -> pl.DataFrame:
    """Per user: every positive, negatives sampled down to `max_items` rows in all; users
    without a positive are dropped (their group carries no signal)."""
    if max_items is not None:
        rng = pl.int_range(pl.len()).shuffle(seed=seed).over("user_id")
        pairs = pairs.filter((pl.col("label") == 1) | (rng < max_items - pl.col("label").sum().over("user_id")))
    return pairs.filter(pl.col("label").sum().over("user_id") > 0)


def _groups(pairs: pl.DataFrame, tag: str, ts: pl.Expr, shape: str) -> pl.DataFrame:
    """The ranking-group columns: one request per user (`user@tag`), ranked at `ts`."""
    return pairs.select(
        request_id=pl.col("user_id") + pl.lit(f"@{tag}"),
        user_id="user_id",
        item_id="item_id",
        ts=ts.cast(pl.Datetime("us", "UTC")),
        label="label",
        shape=pl.lit(shape),
    ).sort("request_id", "item_id")


def user_cut_targets(
    log: pl.DataFrame,
    items: pl.DataFrame,
    end: datetime,
    horizon: timedelta,
    *,
    tag: str,
    max_users: int,
    max_items: int | None,
    seed: int,
    min_user_events: int = 5,
) -> pl.DataFrame:
    """Catalog groups at each user's own moment: many users are active only for a while (a
    MovieLens rater, a reader on holiday), so few of them straddle any one global cutoff. Each
    user with >= min_user_events events before `end` is cut at one of their own events (drawn
    between their 50th and 90th percentile), ranked as of that moment over every item that exists
    by the end of the horizon and they had not seen; label 1 = clicked in [cut, cut + horizon)."""
    ev = log.filter(pl.col("ts") < end).sort("user_id", "ts", "item_id")
    counts = ev.group_by("user_id").len().filter(pl.col("len") >= min_user_events).sort("user_id")
    if counts.height == 0:
        return catalog_targets(ev.head(0), items, end, end, tag=tag, max_users=0, max_items=0, seed=seed)
    rng = np.random.default_rng(seed)
    at = (counts["len"].to_numpy() * rng.uniform(0.5, 0.9, counts.height)).astype(np.int64)
    picks = counts.select("user_id").with_columns(_k=pl.Series(at))
    cuts = (ev.with_columns(_k=pl.int_range(pl.len()).over("user_id")).join(picks, on=["user_id", "_k"])
            .select("user_id", cut="ts").with_columns(until=pl.min_horizontal(pl.col("cut") + horizon, pl.lit(end))))
    window = ev.join(cuts, on="user_id").filter((pl.col("ts") >= pl.col("cut")) & (pl.col("ts") < pl.col("until")))
    positives = window.filter(pl.col("clicked") == 1).select("user_id", "item_id").unique().with_columns(label=pl.lit(1, pl.Int32))
    users = cuts.join(positives.select("user_id").unique(), on="user_id", how="semi").sort("user_id")
    if users.height > max_users:
        users = users.sample(max_users, seed=seed).sort("user_id")
    first = ev.group_by("item_id").agg(_first=pl.col("ts").min())
    catalog = items.select("item_id", "created_at").join(first, on="item_id", how="left")
    exists = pl.coalesce("created_at", "_first") < pl.col("until")
    pairs = users.join(catalog, how="cross").filter(exists.fill_null(False)).select("user_id", "item_id", "cut")
    seen = ev.join(users.select("user_id", "cut"), on="user_id").filter(pl.col("ts") < pl.col("cut")).select("user_id", "item_id").unique()
    pairs = pairs.join(seen, on=["user_id", "item_id"], how="anti")
    pairs = pairs.join(positives, on=["user_id", "item_id"], how="left").with_columns(pl.col("label").fill_null(0))
    return _groups(_sampled(pairs, max_items, seed), tag, pl.col("cut"), "catalog")


def page_targets(
    log: pl.DataFrame,
    cutoff: datetime,
    horizon_end: datetime,
    *,
    tag: str,
    max_users: int,
    seed: int,
    min_user_events: int = 1,
) -> pl.DataFrame:
    """Groups for users shown items in [cutoff, horizon_end) who click one of them: candidates =
    every item shown to the user then, label 1 = clicked then, ranked as of the cutoff (the job of
    re-ranking a page of mostly new items with nothing after the cutoff known)."""
    past = log.filter(pl.col("ts") < cutoff)
    window = log.filter((pl.col("ts") >= cutoff) & (pl.col("ts") < horizon_end))
    active = past.group_by("user_id").len().filter(pl.col("len") >= min_user_events).select("user_id")
    pages = window.group_by("user_id", "item_id").agg(label=(pl.col("clicked") == 1).any().cast(pl.Int32))
    users = (pages.group_by("user_id").agg(clicks=pl.col("label").sum(), shown=pl.len())
             .filter((pl.col("clicks") > 0) & (pl.col("shown") >= 2)).select("user_id").join(active, on="user_id").sort("user_id"))
    if users.height > max_users:
        users = users.sample(max_users, seed=seed).sort("user_id")
    return _groups(pages.join(users, on="user_id", how="semi"), tag, pl.lit(cutoff), "page")


def replay_cutoffs(start: datetime, end: datetime, horizon: timedelta, count: int) -> list[datetime]:
    """`count` cutoffs whose horizons end by `end`, spread over the later half of [start, end)."""
    last = end - horizon
    first = start + (end - start) / 2 - horizon / 2
    if last <= start:
        return []
    first = max(min(first, last), start + (last - start) / 4)
    if count <= 1 or first >= last:
        return [last]
    return [first + (last - first) * (k / (count - 1)) for k in range(count)]

