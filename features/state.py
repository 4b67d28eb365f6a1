"""The event log as running counters: features at one moment later than every event in it.

Online serving and batch scoring ask for features "now", after the whole log. There every
point-in-time aggregate of the feature groups collapses to a counter per key (a window sum: a
sorted array of event times per item), so a request costs dictionary lookups instead of a dozen
polars passes over the log. `LogState` is built once from a log and a catalog and takes in new
events as they arrive (feedback). The groups' `at_moment` functions read it; training, which needs
features at many past moments, keeps the point-in-time polars code. tests/test_moment.py checks
that both give identical feature values.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import numpy as np
import polars as pl

UNKNOWN_CATEGORY = "?"  # items without a category (or not in the catalog), as the polars groups fill it


def micros(ts: datetime | pl.Series) -> np.ndarray:
    """UTC microseconds since the epoch (the unit every array here uses)."""
    series = ts if isinstance(ts, pl.Series) else pl.Series([ts], dtype=pl.Datetime("us", "UTC"))
    return series.cast(pl.Datetime("us", "UTC")).dt.epoch("us").to_numpy()


def whole_seconds(delta_us: np.ndarray) -> np.ndarray:
    """Durations in whole seconds, truncated toward zero (what polars' `dt.total_seconds` does)."""
    return np.where(delta_us >= 0, delta_us // 1_000_000, -(-delta_us // 1_000_000))


@dataclass(frozen=True)
class Trail:
    """Every event of one key (an item, or the whole log), in time order, with running click counts."""

    ts: np.ndarray  # int64 microseconds, sorted
    cum_clicks: np.ndarray  # float64, len(ts) + 1: clicks among the first k events

    @staticmethod
    def of(ts: np.ndarray, clicked: np.ndarray) -> Trail:
        order = np.argsort(ts, kind="stable")
        return Trail(ts[order], np.concatenate([[0.0], np.cumsum(clicked[order], dtype=np.float64)]))

    def extended(self, ts: np.ndarray, clicked: np.ndarray) -> Trail:
        if len(self.ts) and len(ts) and ts.min() >= self.ts[-1]:  # the usual case: newer events
            order = np.argsort(ts, kind="stable")
            more = self.cum_clicks[-1] + np.cumsum(clicked[order], dtype=np.float64)
            return Trail(np.concatenate([self.ts, ts[order]]), np.concatenate([self.cum_clicks, more]))
        old_clicks = np.diff(self.cum_clicks)
        return Trail.of(np.concatenate([self.ts, ts]), np.concatenate([old_clicks, clicked]))

    @cached_property
    def _lists(self) -> tuple[list[int], list[float]]:
        # per-key lookups are scalar: bisect on Python lists costs a fifth of np.searchsorted's
        # per-call overhead (made once per trail; a trail is replaced, not changed, by new events)
        return self.ts.tolist(), self.cum_clicks.tolist()

    def counts(self, before: int, since: int | None = None) -> tuple[float, float]:
        """(clicks, impressions) of events with ts in [since, before) (or (-inf, before))."""
        ts, cum = self._lists
        end = bisect.bisect_left(ts, before)
        start = 0 if since is None else bisect.bisect_left(ts, since)
        return cum[end] - cum[start], float(end - start)

    def popularity(self, before: int, day: int, week: int) -> tuple[float, float, float, float, float, int | None]:
        """(clicks since `day`, clicks since `week`, clicks ever, impressions since `week`,
        impressions ever, the first event's time if before `before`), all before `before`."""
        ts, cum = self._lists
        end = bisect.bisect_left(ts, before)
        d, w = bisect.bisect_left(ts, day), bisect.bisect_left(ts, week)
        first = ts[0] if ts and ts[0] < before else None
        return cum[end] - cum[d], cum[end] - cum[w], cum[end] - cum[0], float(end - w), float(end), first

    def clicks_since(self, before: int, sinces: tuple[int, ...]) -> list[float]:
        """Clicks of events with ts in [since, before), for each of `sinces`."""
        ts, cum = self._lists
        end = cum[bisect.bisect_left(ts, before)]
        return [end - cum[bisect.bisect_left(ts, since)] for since in sinces]

    def counts_many(self, before: np.ndarray, since: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`counts` for arrays of moments at once."""
        end = np.searchsorted(self.ts, before, side="left")
        start = np.zeros_like(end) if since is None else np.searchsorted(self.ts, since, side="left")
        return self.cum_clicks[end] - self.cum_clicks[start], (end - start).astype(np.float64)


EMPTY_TRAIL = Trail(np.zeros(0, np.int64), np.zeros(1))


@dataclass
class ItemCounts:
    trail: Trail
    last_click: int | None  # microseconds


@dataclass
class UserCounts:
    clicks: float = 0.0
    shown: float = 0.0
    last_click: int | None = None
    clicked: list[tuple[int, str]] = field(default_factory=list)  # (ts, item_id) of every click, sorted
    by_category: dict[str, list[float]] = field(default_factory=dict)  # category -> [clicks, shown]
    by_item: dict[str, list[float]] = field(default_factory=dict)  # item_id -> [clicks, shown]

    _histories: dict[int, tuple[int, list[str]]] = field(default_factory=dict, repr=False, compare=False)  # length -> (clicks then, ids)

    def history(self, length: int) -> list[str]:
        """The last `length` clicked item ids, most recent last (ties in ts: by item id). The
        list is shared by every call until the user's next click (callers only read it): a
        request asks once per candidate row and group."""
        if length <= 0:
            return []
        made = self._histories.get(length)
        if made is None or made[0] != len(self.clicked):
            made = self._histories[length] = (len(self.clicked), [item for _, item in self.clicked[-length:]])
        return made[1]

    def clicked_items(self) -> list[str]:
        """Every clicked item id in click order (shared until the next click, as `history`)."""
        return self.history(1 << 62) if self.clicked else []


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class LogState:
    """Per-key counters of an event log, for one catalog (categories and creation dates)."""

    def __init__(self, items: pl.DataFrame) -> None:
        catalog = items.select("item_id", pl.col("category").fill_null(UNKNOWN_CATEGORY), created=pl.col("created_at").dt.epoch("us"))
        self.category: dict[str, str] = dict(zip(catalog["item_id"].to_list(), catalog["category"].to_list()))
        self.created: dict[str, int | None] = dict(zip(catalog["item_id"].to_list(), catalog["created"].to_list()))
        self.n_categories = max(catalog["category"].n_unique(), 1)
        self.items: dict[str, ItemCounts] = {}
        self.users: dict[str, UserCounts] = {}
        self.everything = EMPTY_TRAIL  # the whole log: global click rates
        self.rows = 0  # events taken in so far
        self.last_ts: int | None = None

    @classmethod
    def of(cls, log: pl.DataFrame, items: pl.DataFrame) -> LogState:
        state = cls(items)
        state.add(log)
        return state

    def before(self, ts: np.ndarray) -> bool:
        """Whether every event taken in is strictly earlier than every moment in `ts`."""
        return self.last_ts is None or bool(len(ts) == 0 or ts.min() > self.last_ts)

    def add(self, events: pl.DataFrame) -> None:
        """Take in events (the events schema), in any order."""
        if events.height == 0:
            return
        ev = events.select(
            pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String),
            # a click is clicked == 1, as in the polars groups
            ts=pl.col("ts").dt.epoch("us"), clicked=(pl.col("clicked") == 1).fill_null(False).cast(pl.Float64),
        )
        # categories of these rows' items only (not a mapping of the whole catalog per call)
        ev = ev.with_columns(category=pl.Series([self.category.get(i, UNKNOWN_CATEGORY) for i in ev["item_id"].to_list()], dtype=pl.String))
        ts, clicked = ev["ts"].to_numpy(), ev["clicked"].to_numpy()
        self.everything = self.everything.extended(ts, clicked)
        self.last_ts = _later(self.last_ts, int(ts.max()))
        self._add_items(ev)
        self._add_users(ev)
        self.rows += events.height

    def _add_items(self, ev: pl.DataFrame) -> None:
        by_item = ev.group_by("item_id").agg(
            "ts", "clicked", last_click=pl.col("ts").filter(pl.col("clicked") > 0).max()
        )
        for item, ts, clicked, last_click in by_item.iter_rows():
            ts_arr, clicked_arr = np.asarray(ts, np.int64), np.asarray(clicked, np.float64)
            known = self.items.get(item)
            if known is None:
                self.items[item] = ItemCounts(Trail.of(ts_arr, clicked_arr), last_click)
            else:
                self.items[item] = ItemCounts(known.trail.extended(ts_arr, clicked_arr), _later(known.last_click, last_click))

    def _add_users(self, ev: pl.DataFrame) -> None:
        totals = ev.group_by("user_id").agg(
            clicks=pl.col("clicked").sum(), shown=pl.len().cast(pl.Float64),
            last_click=pl.col("ts").filter(pl.col("clicked") > 0).max(),
        )
        for user, clicks, shown, last_click in totals.iter_rows():
            counts = self.users.setdefault(user, UserCounts())
            counts.clicks += clicks
            counts.shown += shown
            counts.last_click = _later(counts.last_click, last_click)
        for key, table in (("category", "by_category"), ("item_id", "by_item")):
            pairs = ev.group_by("user_id", key).agg(clicks=pl.col("clicked").sum(), shown=pl.len().cast(pl.Float64))
            for user, value, clicks, shown in pairs.iter_rows():
                slot = getattr(self.users[user], table).setdefault(value, [0.0, 0.0])
                slot[0] += clicks
                slot[1] += shown
        clicks = ev.filter(pl.col("clicked") > 0).sort("user_id", "ts", "item_id")
        for user, ts, item in clicks.select("user_id", "ts", "item_id").iter_rows():
            history = self.users[user].clicked
            if not history or (ts, item) >= history[-1]:
                history.append((ts, item))
            else:  # a late click
                bisect.insort(history, (ts, item))
