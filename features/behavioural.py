"""Behavioural feature groups: item popularity and CTR, user activity, user taste, position."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import polars as pl

from features.pointintime import global_totals, last_before, sums_before, sums_over, totals_before
from features.registry import KEYS, FeatureContext, FeatureSpec, MomentContext, MomentValues, at_moment, register
from features.state import FOREVER, UNKNOWN_CATEGORY, LogState, whole_seconds

F32 = pl.Float32
Rate = TypeVar("Rate", pl.Expr, np.ndarray)
PRIOR_IMPRESSIONS = 20.0  # smoothing strength: a CTR counts as this many impressions at the global rate


def smoothed_rate(clicks: Rate, shown: Rate, prior: Rate | float, strength: float = PRIOR_IMPRESSIONS) -> Rate:
    """The one smoothed CTR: clicks plus `strength` pseudo-impressions at the `prior` rate, over
    impressions plus `strength`. Polars expressions or numpy arrays: the same float64 operations
    in the same order, so the log and counters paths agree bit for bit."""
    return (clicks + strength * prior) / (shown + strength)


def _smoothed_ctr(clicks: pl.Expr, shown: pl.Expr) -> pl.Expr:
    """Shrinks a CTR towards `_prior`, the global CTR before the target's ts."""
    return smoothed_rate(clicks, shown, pl.col("_prior"))


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


DAY_US, WEEK_US = 86_400_000_000, 7 * 86_400_000_000


def _prior_at(ctx: MomentContext) -> np.ndarray:
    """`_prior` of each target row from the state: the global click rate before its ts."""
    def prior() -> np.ndarray:
        clicks, shown = global_counts(ctx)
        return np.divide(clicks, shown, out=np.zeros_like(clicks), where=shown > 0)

    return ctx.once("prior", prior)  # type: ignore[no-any-return]


def global_counts(ctx: MomentContext, span: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The whole log's (clicks, impressions) before each target row's ts (within `span` µs of
    it), read once per distinct moment (a request's rows share one) and per call."""
    def counts() -> tuple[np.ndarray, np.ndarray]:
        ts = ctx.ts
        if len(ts) and ts[0] == ts[-1] and bool((ts == ts[0]).all()):  # one moment: a request, a batch at "now"
            t = int(ts[0])
            clicks, shown = ctx.state.everything.counts(t, None if span is None else t - span)
            return np.full(len(ts), clicks), np.full(len(ts), shown)
        moments, inverse = np.unique(ts, return_inverse=True)
        clicks, shown = ctx.state.everything.counts_many(moments, None if span is None else moments - span)
        return clicks[inverse], shown[inverse]

    return ctx.once(("global_counts", span), counts)  # type: ignore[no-any-return]


def memo_codes(ctx: MomentContext) -> np.ndarray:
    """The targets' item codes in the state's item memos, made once per call."""
    return ctx.once("memo_codes", lambda: ctx.state.memo_codes(ctx.item_ids))  # type: ignore[no-any-return]


def _days(since: np.ndarray, now: np.ndarray) -> np.ma.MaskedArray:
    """Days from `since` (µs; NaN = none) to `now`, as polars computes them; masked (null) for
    none. Numpy throughout: a polars Series per call cost more than the arithmetic."""
    days, unknown = _days_or_nan(since, now)
    return np.ma.masked_array(days, mask=unknown)


def _days_or_nan(since: np.ndarray, now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_days` as (days with NaN for none, where none)."""
    unknown = np.isnan(since)
    delta = now - np.where(unknown, 0.0, since).astype(np.int64)
    return np.where(unknown, np.nan, whole_seconds(delta) / 86_400.0), unknown


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
        FeatureSpec("item_age_days", F32, "days since the item was created or first shown (0: not yet shown, or created later)"),
        FeatureSpec("item_is_new", F32, "1 when the item was never shown before the moment of ranking (cold start), else 0"),
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
    out = out.join(born, on="item_id", how="left", maintain_order="left")
    # point in time: a first impression at or after the target's ts is not known at ts (it would
    # otherwise give future items a negative age, a label leak that serving never sees)
    first = pl.when(pl.col("first") < pl.col("ts")).then(pl.col("first"))
    out = out.with_columns(since=pl.coalesce("created_at", first), _new=first.is_null())
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
        item_age_days=_age_days((pl.col("ts") - pl.col("since")).dt.total_seconds()),
        item_is_new=pl.col("_new").cast(F32),
    )


def _age_days(seconds: pl.Expr) -> pl.Expr:
    """Age in days from whole seconds; unknown (never shown, no created_at) and not-yet-created
    items are 0 days old: new, not missing (a missing age read as "bad" sank every new item)."""
    return pl.max_horizontal(seconds.fill_null(0), pl.lit(0)) / 86_400.0


@at_moment("item_popularity")
def item_popularity_at(ctx: MomentContext) -> MomentValues:
    prior = _prior_at(ctx)
    items, created_at, state = ctx.item_ids, ctx.state.created, ctx.state

    def read(row: int, t: int) -> tuple[int, int, tuple[float, ...]]:
        item = items[row]
        counts = state.items.get(item)
        created = created_at.get(item)
        if counts is None:  # no event yet: holds until it has one (the memo is dropped then)
            return -FOREVER, FOREVER, (0.0, 0.0, 0.0, 0.0, 0.0, np.nan, np.nan if created is None else created, 1.0)
        lo, hi, (c_1d, c_7d, c_all, s_7d, s_all, first) = counts.trail.popularity(t, t - DAY_US, t - WEEK_US)
        since = created if created is not None else first
        last = counts.last_click
        return lo, hi, (c_1d, c_7d, c_all, s_7d, s_all, np.nan if last is None else last, np.nan if since is None else since,
                        1.0 if first is None else 0.0)

    v = state.item_memo(("popularity", DAY_US, WEEK_US), 8).read(memo_codes(ctx), ctx.ts, read)
    c_1d, c_7d, c_all, s_7d, s_all, last, since, new = v.T
    days, unknown = _days_or_nan(since, ctx.ts)
    age = np.where(unknown, 0.0, days)
    total_7d, _ = global_counts(ctx, WEEK_US)
    return {
        "item_clicks_1d": c_1d,
        "item_clicks_7d": c_7d,
        "item_clicks_all": c_all,
        "item_shown_7d": s_7d,
        "item_ctr_7d": smoothed_rate(c_7d, s_7d, prior),
        "item_ctr_all": smoothed_rate(c_all, s_all, prior),
        "item_click_share_7d": c_7d / np.maximum(total_7d, 1.0),
        "item_days_since_click": _days(last, ctx.ts),
        "item_age_days": np.maximum(age, 0.0),
        "item_is_new": new,
    }


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


@at_moment("user_activity")
def user_activity_at(ctx: MomentContext) -> MomentValues:
    users = [ctx.state.users.get(u) for u in ctx.user_ids]
    shown = np.array([u.shown if u else 0.0 for u in users])
    clicks = np.array([u.clicks if u else 0.0 for u in users])
    last = np.array([u.last_click if u and u.last_click is not None else np.nan for u in users], dtype=np.float64)
    return {
        "user_shown_all": shown,
        "user_clicks_all": clicks,
        "user_ctr": smoothed_rate(clicks, shown, _prior_at(ctx)),
        "user_days_since_click": _days(last, ctx.ts),
    }


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
    return _affinity(ctx, ctx.items.select("item_id", category=pl.col("category").fill_null("?")))


def _affinity(ctx: FeatureContext, category: pl.DataFrame) -> pl.DataFrame:
    """user_affinity's columns for an item -> `category` mapping (unmapped items: "?")."""
    out, n_categories = _affinity_sums(ctx, category)
    return out.select(
        *KEYS,
        user_category_clicks="clicks_cat",
        user_category_share=(pl.col("clicks_cat") + 1.0 / n_categories) / (pl.col("clicks_user") + 1.0),
        user_category_ctr=_smoothed_ctr(pl.col("clicks_cat"), pl.col("shown_cat")),
        user_item_shown="shown_item",
        user_item_clicks="clicks_item",
    )


def _affinity_sums(ctx: FeatureContext, category: pl.DataFrame, by_category: bool = False) -> tuple[pl.DataFrame, int]:
    """Targets + `_prior`, `category` and the sums before each target's ts: the user's clicks and
    impressions in the item's category (`_cat`), their clicks (`_user`), on the item (`_item`),
    and with `by_category` everyone's in the category (`_every`); and how many categories."""
    log = _counts(ctx.log).join(category, on="item_id", how="left").with_columns(pl.col("category").fill_null("?"))
    t = ctx.targets.select(*KEYS, "user_id", "ts").join(category, on="item_id", how="left", maintain_order="left")
    t = _with_prior(_totals(ctx), t.with_columns(pl.col("category").fill_null("?")))
    n_categories = max(category["category"].n_unique(), 1)
    out = sums_before(log, t, ["user_id", "category"], ["clicks", "shown"], None, "_cat")
    out = sums_before(log, out, ["user_id"], ["clicks"], None, "_user")
    out = sums_before(log, out, ["user_id", "item_id"], ["clicks", "shown"], None, "_item")
    if by_category:
        out = sums_before(log, out, ["category"], ["clicks", "shown"], None, "_every")
    return out, n_categories


@at_moment("user_affinity")
def user_affinity_at(ctx: MomentContext) -> MomentValues:
    state, n = ctx.state, ctx.targets.height
    item_ids = ctx.item_ids
    item_code, category_code = state.user_codes(item_ids)
    per_category, per_item, clicks_user = np.zeros((n, 2)), np.zeros((n, 2)), np.zeros(n)
    for user_id, rows in rows_by_user(ctx.targets):  # one numpy lookup per user, not a dict per row
        user = state.users.get(user_id)
        if user is not None:
            per_category[rows] = user.by_category.counts_of(category_code[rows])
            per_item[rows] = user.by_item.counts_of(item_code[rows])
            clicks_user[rows] = user.clicks
    (clicks_cat, shown_cat), (clicks_item, shown_item) = per_category.T, per_item.T
    return {
        "user_category_clicks": clicks_cat,
        "user_category_share": (clicks_cat + 1.0 / state.n_categories) / (clicks_user + 1.0),
        "user_category_ctr": smoothed_rate(clicks_cat, shown_cat, _prior_at(ctx)),
        "user_item_shown": shown_item,
        "user_item_clicks": clicks_item,
    }


def per_row(keys: list[str], value: Callable[[str], int], dtype: type = np.int64) -> np.ndarray:
    """value(key) for each key, computed once per distinct key."""
    known = {key: value(key) for key in set(keys)}
    return np.array([known[key] for key in keys], dtype=dtype)


def rows_by_user(targets: pl.DataFrame) -> list[tuple[str, np.ndarray]]:
    """Each user of the target rows with the positions of their rows."""
    if targets.height <= 4096:  # a request's rows: a dict costs microseconds where a polars group_by costs ~0.3 ms
        by_user: dict[str, list[int]] = {}
        for row, user in enumerate(targets["user_id"].to_list()):
            by_user.setdefault(user, []).append(row)
        return [(user, np.asarray(rows, dtype=np.int64)) for user, rows in by_user.items()]
    grouped = targets.select("user_id").with_row_index("_row").group_by("user_id", maintain_order=True).agg("_row")
    return [(user, np.asarray(rows, dtype=np.int64)) for user, rows in grouped.iter_rows()]


@register("position", [FeatureSpec("position", F32, "slot the item was shown in (re-ranking logs only; null when unknown)")])
def position(ctx: FeatureContext) -> pl.DataFrame:
    if "position" in ctx.targets.columns:
        return ctx.targets.select(*KEYS, position=pl.col("position"))
    return ctx.targets.select(*KEYS, position=pl.lit(None, dtype=F32))


@at_moment("position")
def position_at(ctx: MomentContext) -> MomentValues:
    if "position" in ctx.targets.columns:
        return {"position": ctx.targets["position"]}
    return {"position": pl.Series([None] * ctx.targets.height, dtype=F32)}


RECENT_US_KEY = "recent_us"  # artefacts["time_scale"][RECENT_US_KEY]: the data's own "recent" window, µs


def recent_window(ctx: FeatureContext | MomentContext) -> int:
    """The run's recent window in whole microseconds (the ranker's label horizon, saved at training)."""
    return int(ctx.artefacts["time_scale"][RECENT_US_KEY])


@register(
    "item_trend",
    [
        FeatureSpec("item_clicks_recent", F32, "clicks on the item in the data's recent window (the label horizon)"),
        FeatureSpec("item_click_share_recent", F32, "the item's share of all clicks in the recent window"),
        FeatureSpec("item_trend", F32, "(clicks in the recent window + 1) / (clicks in the window before it + 1)"),
        FeatureSpec("item_clicks_recent_short", F32, "clicks on the item in the last eighth of the recent window"),
    ],
    requires=("time_scale",),
)
def item_trend(ctx: FeatureContext) -> pl.DataFrame:
    window = timedelta(microseconds=recent_window(ctx))
    log, t = _counts(ctx.log), ctx.targets.select(*KEYS, "ts")
    out = sums_over(log, t, ["item_id"], ["clicks"], {"_r": window, "_r2": 2 * window, "_rs": _short(window)})
    out = out.with_columns(_total=totals_before(_totals(ctx), t, window)["clicks"])
    return out.select(
        *KEYS,
        item_clicks_recent="clicks_r",
        item_click_share_recent=pl.col("clicks_r") / pl.max_horizontal(pl.col("_total"), pl.lit(1.0)),
        item_trend=(pl.col("clicks_r") + 1.0) / (pl.col("clicks_r2") - pl.col("clicks_r") + 1.0),
        item_clicks_recent_short="clicks_rs",
    )


def _short(window: timedelta) -> timedelta:
    """An eighth of the recent window, in whole microseconds (what the counters twin uses)."""
    return timedelta(microseconds=(window // timedelta(microseconds=1)) // 8)


@at_moment("item_trend")
def item_trend_at(ctx: MomentContext) -> MomentValues:
    window = recent_window(ctx)
    items, state = ctx.item_ids, ctx.state

    def read(row: int, t: int) -> tuple[int, int, tuple[float, ...]]:
        counts = state.items.get(items[row])
        if counts is None:  # no event yet: holds until it has one
            return -FOREVER, FOREVER, (0.0, 0.0, 0.0)
        return counts.trail.clicks_since(t, (t - window, t - 2 * window, t - window // 8))  # type: ignore[no-any-return]

    c_r, c_r2, short = state.item_memo(("clicks_since", window), 3).read(memo_codes(ctx), ctx.ts, read).T
    total, _ = global_counts(ctx, window)
    return {
        "item_clicks_recent": c_r,
        "item_click_share_recent": c_r / np.maximum(total, 1.0),
        "item_trend": (c_r + 1.0) / (c_r2 - c_r + 1.0),
        "item_clicks_recent_short": short,
    }


@register(
    "user_topic",
    [
        FeatureSpec("user_topic_clicks", F32, "the user's clicks on items of this item's text topic (clusters of item text vectors)"),
        FeatureSpec("user_topic_share", F32, "share of the user's clicks in this text topic (smoothed)"),
        FeatureSpec("user_topic_ctr", F32, "the user's CTR on this text topic, smoothed towards the topic's CTR"),
        FeatureSpec("topic_ctr", F32, "everyone's smoothed CTR on items of this text topic: how items like it fare (a new item's prior)"),
    ],
    requires=("topics",),
)
def user_topic(ctx: FeatureContext) -> pl.DataFrame:
    topics: pl.DataFrame = ctx.artefacts["topics"]
    out, n_topics = _affinity_sums(ctx, topics.select("item_id", category=pl.col("topic")), by_category=True)
    # a hierarchy of rates: global -> topic -> this user in the topic. A user's few impressions
    # in a topic say little; shrunk towards the global rate, they hide what the topic itself
    # draws (on a news-like site the larger part of the signal), so they shrink towards it
    topic_ctr = _smoothed_ctr(pl.col("clicks_every"), pl.col("shown_every"))
    return out.select(
        *KEYS,
        user_topic_clicks="clicks_cat",
        user_topic_share=(pl.col("clicks_cat") + 1.0 / n_topics) / (pl.col("clicks_user") + 1.0),
        user_topic_ctr=smoothed_rate(pl.col("clicks_cat"), pl.col("shown_cat"), topic_ctr),
        topic_ctr=topic_ctr,
    )


_TOPIC_MAPS: dict[int, tuple[pl.DataFrame, dict[str, str], int]] = {}


def topic_map(topics: pl.DataFrame) -> tuple[dict[str, str], int]:
    """item_id -> topic and the number of topics of a run's topics frame, made once per frame
    (a request used to rebuild the dict from the frame). The entry holds the frame, so its id is
    not reused while cached."""
    hit = _TOPIC_MAPS.get(id(topics))
    if hit is None or hit[0] is not topics:
        topic_of = dict(zip(topics["item_id"].to_list(), topics["topic"].to_list()))
        if len(_TOPIC_MAPS) >= 8:  # a few runs at most per process (A/B arms, hot swaps)
            _TOPIC_MAPS.clear()
        hit = _TOPIC_MAPS[id(topics)] = (topics, topic_of, max(len(set(topic_of.values())), 1))  # as the polars group counts them
    return hit[1], hit[2]


@at_moment("user_topic")
def user_topic_at(ctx: MomentContext) -> MomentValues:
    topic_of, n_topics = topic_map(ctx.artefacts["topics"])
    slot: dict[str, int] = {}  # topic -> column of the per-user sums (UNKNOWN_CATEGORY included)
    def slot_of(item: str) -> int:
        return slot.setdefault(topic_of.get(item, UNKNOWN_CATEGORY), len(slot))

    n = ctx.targets.height
    wanted = per_row(ctx.item_ids, slot_of)
    per_topic, clicks_user = np.zeros((n, 2)), np.zeros(n)
    for user_id, rows in rows_by_user(ctx.targets):
        user = ctx.state.users.get(user_id)
        if user is None:
            continue
        # the user's [clicks, shown] per topic, from their per-item counts
        topics = np.array([slot_of(item) for item in user.by_item], dtype=np.int64)
        _, counts = user.by_item.arrays()
        sums = np.zeros((len(slot), 2))
        np.add.at(sums, topics, counts)
        per_topic[rows] = sums[wanted[rows]]
        clicks_user[rows] = user.clicks
    clicks_t, shown_t = per_topic.T
    # everyone's [clicks, shown] per topic, by the same slots the rows already know
    every = topic_totals(ctx.state, ctx.artefacts["topics"])
    by_slot = np.array([every.get(topic, (0.0, 0.0)) for topic in slot], dtype=np.float64).reshape(-1, 2)
    clicks_every, shown_every = by_slot[wanted].T
    topic_ctr = smoothed_rate(clicks_every, shown_every, _prior_at(ctx))
    return {
        "user_topic_clicks": clicks_t,
        "user_topic_share": (clicks_t + 1.0 / n_topics) / (clicks_user + 1.0),
        "user_topic_ctr": smoothed_rate(clicks_t, shown_t, topic_ctr),
        "topic_ctr": topic_ctr,
    }


def items_read(topics: pl.DataFrame | None, item_ids: list[str]) -> list[str]:
    """The items whose events the per-key features of these candidates read: themselves and,
    with text topics, every item of their topics (`topic_ctr` sums them). A log cut down to the
    events of fewer items (serving's point-in-time view) would change those sums."""
    if topics is None:
        return item_ids
    wanted = topics.filter(pl.col("item_id").is_in(item_ids))["topic"].unique()
    return sorted(set(item_ids) | set(topics.filter(pl.col("topic").is_in(wanted.to_list()))["item_id"].to_list()))


_TOPIC_TOTALS: dict[tuple[int, int], tuple[LogState, pl.DataFrame, dict[str, list[float]]]] = {}


def topic_totals(state: LogState, topics: pl.DataFrame) -> dict[str, list[float]]:
    """topic -> [clicks, impressions] of every event in `state`, which is what the point-in-time
    sums give at a moment after the log. Summed over the items once per state and topics frame;
    then the state's later events are added as they arrive (`LogState.on_add`), so live feedback
    costs no pass over the catalog per request."""
    key = (id(state), id(topics))
    hit = _TOPIC_TOTALS.get(key)
    if hit is None or hit[0] is not state or hit[1] is not topics:
        topic_of, _ = topic_map(topics)
        sums: dict[str, list[float]] = {}
        for item, counts in state.items.items():
            pair = sums.setdefault(topic_of.get(item, UNKNOWN_CATEGORY), [0.0, 0.0])
            pair[0] += counts.trail.cum_clicks[-1]
            pair[1] += counts.trail.cum_shown[-1]

        def take_in(events: pl.DataFrame) -> None:
            for item, clicked in zip(events["item_id"].to_list(), events["clicked"].to_list()):
                pair = sums.setdefault(topic_of.get(item, UNKNOWN_CATEGORY), [0.0, 0.0])
                pair[0] += clicked
                pair[1] += 1.0

        state.on_add(take_in)
        if len(_TOPIC_TOTALS) >= 8:  # a few (state, run) pairs at most per process (A/B arms, hot swaps)
            _TOPIC_TOTALS.clear()
        hit = _TOPIC_TOTALS[key] = (state, topics, sums)
    return hit[2]


def horizon_of(artefacts: Mapping[str, Any]) -> int:
    """The longest look-back (µs) of any counters twin for a run's artefacts: item_popularity's
    7 days (and 1 day), item_trend's twice the recent window (and the window, and an eighth of
    it); the global rates use the same windows; every other count is over all time."""
    scale = artefacts.get("time_scale") or {}
    return max(WEEK_US, 2 * int(scale.get(RECENT_US_KEY, 0)))
