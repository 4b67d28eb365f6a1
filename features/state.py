"""The event log as running counters: features at one moment later than every event in it.

Online serving and batch scoring ask for features "now", after the whole log. There every
point-in-time aggregate of the feature groups collapses to a counter per key (a window sum: a
sorted array of event times per item), so a request costs lookups instead of a dozen polars
passes over the log. `LogState` is built once from a log and a catalog and takes in new events as
they arrive (feedback). The groups' `at_moment` functions read it; training, which needs features
at many past moments, keeps the point-in-time polars code. tests/test_moment.py checks that both
give identical feature values.

Bounded for a long-running service (issue 20): counters live in compact arrays, not Python
objects per event. An item's (and the whole log's) events are kept per distinct moment with
running click and impression counts (24 bytes a moment, grown in place); a user's counts per item
and per category are two arrays (20 bytes a pair); a user keeps only their latest clicks
(`KEPT_CLICKS`, the histories read the last 10; which items they ever clicked is in the per-item
counts). With `set_horizon` (serving sets the run's `features.behavioural.horizon_of`), events older than the longest
window any feature reads are folded into per-key totals, so memory holds one horizon of events,
not the whole stream. A window that would reach into folded events is an AssertionError, never a
wrong value.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

UNKNOWN_CATEGORY = "?"  # items without a category (or not in the catalog), as the polars groups fill it
KEPT_CLICKS = 32  # a user's latest clicks kept for histories (features read 10); up to twice as many between trims


def micros(ts: datetime | pl.Series) -> np.ndarray:
    """UTC microseconds since the epoch (the unit every array here uses)."""
    series = ts if isinstance(ts, pl.Series) else pl.Series([ts], dtype=pl.Datetime("us", "UTC"))
    return series.cast(pl.Datetime("us", "UTC")).dt.epoch("us").to_numpy()


def whole_seconds(delta_us: np.ndarray) -> np.ndarray:
    """Durations in whole seconds, truncated toward zero (what polars' `dt.total_seconds` does)."""
    return np.where(delta_us >= 0, delta_us // 1_000_000, -(-delta_us // 1_000_000))


FOREVER = 1 << 62  # µs: beyond any moment


class Trail:
    """Every event of one key (an item, or the whole log) by distinct moment: `ts` sorted (µs),
    `cum_clicks` / `cum_shown` the clicks and impressions through each moment (len(ts) + 1
    entries; the first holds the events folded away). array.array, not numpy: grown in place,
    and a scalar bisect on it costs far less than np.searchsorted's per-call overhead.

    Reads at a moment also give the span of moments over which their values hold (no event
    enters or leaves any of their windows there): `ItemMemo` keeps them for that span."""

    __slots__ = ("ts", "cum_clicks", "cum_shown", "first", "folded_before")

    def __init__(self) -> None:
        self.ts = array("q")
        self.cum_clicks = array("d", [0.0])
        self.cum_shown = array("d", [0.0])
        self.first: int | None = None  # the earliest event's moment, folded or not
        self.folded_before: int | None = None  # events before this moment are only in the totals

    @staticmethod
    def of(ts: np.ndarray, clicked: np.ndarray) -> Trail:
        trail = Trail()
        trail.add(ts, clicked)
        return trail

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def nbytes(self) -> int:
        return 8 * (len(self.ts) + len(self.cum_clicks) + len(self.cum_shown))

    def add(self, ts: np.ndarray, clicked: np.ndarray) -> None:
        """Take in events (µs; 1.0 a click, 0.0 not) in any order."""
        if len(ts) == 0:
            return
        if len(ts) == 1:  # the usual case per item and feedback call
            t, c = int(ts[0]), float(clicked[0])
            self.first = t if self.first is None or t < self.first else self.first
            if (self.folded_before is None or t >= self.folded_before) and (not self.ts or t > self.ts[-1]):
                self.ts.append(t)
                self.cum_clicks.append(self.cum_clicks[-1] + c)
                self.cum_shown.append(self.cum_shown[-1] + 1.0)
            elif self.ts and t == self.ts[-1]:
                self.cum_clicks[-1] += c
                self.cum_shown[-1] += 1.0
            else:
                self._merge(np.array([t], np.int64), np.array([c]), np.array([1.0]))
            return
        moments, inverse = np.unique(np.asarray(ts, np.int64), return_inverse=True)
        clicks = np.bincount(inverse, weights=clicked, minlength=len(moments))
        shown = np.bincount(inverse, minlength=len(moments)).astype(np.float64)
        lo = int(moments[0])
        self.first = lo if self.first is None or lo < self.first else self.first
        if (self.folded_before is not None and lo < self.folded_before) or (self.ts and lo < self.ts[-1]):
            self._merge(moments, clicks, shown)  # late events: rebuilt (rare)
            return
        if self.ts and lo == self.ts[-1]:
            self.cum_clicks[-1] += float(clicks[0])
            self.cum_shown[-1] += float(shown[0])
            moments, clicks, shown = moments[1:], clicks[1:], shown[1:]
        # counts are whole numbers: the running sums are exact in float64 in any order
        self.ts.frombytes(moments.tobytes())
        self.cum_clicks.frombytes((self.cum_clicks[-1] + np.cumsum(clicks)).tobytes())
        self.cum_shown.frombytes((self.cum_shown[-1] + np.cumsum(shown)).tobytes())

    def _merge(self, moments: np.ndarray, clicks: np.ndarray, shown: np.ndarray) -> None:
        cc, cs = np.array(self.cum_clicks), np.array(self.cum_shown)  # copies: the arrays are replaced below
        every = np.concatenate([np.array(self.ts, dtype=np.int64), moments])
        c, s = np.concatenate([np.diff(cc), clicks]), np.concatenate([np.diff(cs), shown])
        base_c, base_s = float(cc[0]), float(cs[0])
        if self.folded_before is not None:
            old = every < self.folded_before  # older than the horizon: into the totals only
            base_c, base_s = base_c + float(c[old].sum()), base_s + float(s[old].sum())
            every, c, s = every[~old], c[~old], s[~old]
        moments, inverse = np.unique(every, return_inverse=True)
        self.ts = array("q")
        self.ts.frombytes(moments.astype(np.int64).tobytes())
        self.cum_clicks, self.cum_shown = array("d", [base_c]), array("d", [base_s])
        self.cum_clicks.frombytes((base_c + np.cumsum(np.bincount(inverse, weights=c, minlength=len(moments)))).tobytes())
        self.cum_shown.frombytes((base_s + np.cumsum(np.bincount(inverse, weights=s, minlength=len(moments)))).tobytes())

    def fold(self, before: int) -> None:
        """Keep the events before `before` only in the totals: counts over all time stay, a
        window may no longer start before `before`."""
        k = bisect.bisect_left(self.ts, before)
        if k:
            del self.ts[:k]
            del self.cum_clicks[:k]  # the entry at k (now the first) holds every event before it
            del self.cum_shown[:k]
        self.folded_before = before if self.folded_before is None else max(self.folded_before, before)

    def _window(self, since: int) -> None:
        if self.folded_before is not None and since < self.folded_before:
            raise AssertionError(f"bug: a window from {since} µs reaches before {self.folded_before} µs, where the "
                                 "counters were folded; LogState.set_horizon needs the longest window (features.behavioural.horizon_of)")

    def counts(self, before: int, since: int | None = None) -> tuple[float, float]:
        """(clicks, impressions) of events with ts in [since, before) (or (-inf, before))."""
        end = bisect.bisect_left(self.ts, before)
        if since is None:
            return self.cum_clicks[end], self.cum_shown[end]
        self._window(since)
        start = bisect.bisect_left(self.ts, since)
        return self.cum_clicks[end] - self.cum_clicks[start], self.cum_shown[end] - self.cum_shown[start]

    def _positions(self, before: int, spans: tuple[int, ...]) -> tuple[list[int], int, int]:
        """Where each window start `before - span` falls in `ts` (bisect_left), and the moments
        (lo, hi] over which every position stays the same."""
        ts, n = self.ts, len(self.ts)
        lo, hi = -FOREVER, FOREVER
        if self.folded_before is not None:  # a window may not reach before the fold (see _window)
            lo = self.folded_before + max(spans) - 1
        out = []
        for span in spans:
            k = bisect.bisect_left(ts, before - span)
            out.append(k)
            if k:
                lo = max(lo, ts[k - 1] + span)
            if k < n:
                hi = min(hi, ts[k] + span)
        return out, lo, hi

    def popularity(self, before: int, day: int, week: int) -> tuple[int, int, Any]:
        """(lo, hi, values): values = (clicks since `day`, clicks since `week`, clicks ever,
        impressions since `week`, impressions ever, the first event's time if before `before`),
        all before `before`; they hold for every moment in (lo, hi]."""
        self._window(min(day, week))
        (end, d, w), lo, hi = self._positions(before, (0, before - day, before - week))
        cc, cs = self.cum_clicks, self.cum_shown
        first = None
        if self.first is not None:
            if self.first < before:
                first, lo = self.first, max(lo, self.first)
            else:
                hi = min(hi, self.first)
        return lo, hi, (cc[end] - cc[d], cc[end] - cc[w], cc[end], cs[end] - cs[w], cs[end], first)

    def clicks_since(self, before: int, sinces: tuple[int, ...]) -> tuple[int, int, Any]:
        """(lo, hi, values): values = the clicks of events with ts in [since, before), for each
        of `sinces`; they hold for every moment in (lo, hi]."""
        self._window(min(sinces))
        (end, *starts), lo, hi = self._positions(before, (0, *(before - since for since in sinces)))
        cc = self.cum_clicks
        return lo, hi, tuple(cc[end] - cc[k] for k in starts)

    def counts_many(self, before: np.ndarray, since: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`counts` for arrays of moments at once."""
        if since is not None and len(since):
            self._window(int(np.min(since)))
        # views of the arrays, gone when this returns (an array.array cannot grow while viewed)
        ts = np.frombuffer(self.ts, np.int64)
        cc, cs = np.frombuffer(self.cum_clicks, np.float64), np.frombuffer(self.cum_shown, np.float64)
        end = np.searchsorted(ts, before, side="left")
        if since is None:
            return cc[end], cs[end]
        start = np.searchsorted(ts, since, side="left")
        return cc[end] - cc[start], cs[end] - cs[start]


class ItemMemo:
    """One per-item read (an item's popularity counts, say) for a request's candidates at once:
    each item's last values and the moments (lo, hi] over which they hold, in arrays by item
    code, so candidates whose values still hold cost one gather instead of a Python call each
    (a request reads its candidates at "now", which moves far less often than requests come).
    `LogState` drops an item's entry when its events change, and every entry when it folds."""

    def __init__(self, width: int) -> None:
        self.values = np.zeros((0, width), np.float64)
        self.lo = np.zeros(0, np.int64)
        self.hi = np.zeros(0, np.int64)  # hi <= lo: nothing held
        # an entry is three writes (values, lo, hi): two readers at once must not pair one's
        # values with the other's span (serving reads under its own lock; a library caller may not)
        self._lock = threading.Lock()

    def drop(self, code: int | None = None) -> None:
        """Forget one item's entry (None: every entry)."""
        with self._lock:
            if code is None:
                self.hi[:] = -FOREVER
            elif code < len(self.hi):
                self.hi[code] = -FOREVER

    def _grow(self, size: int) -> None:
        if size > len(self.hi):
            size = max(size, 2 * len(self.hi))
            grown = len(self.hi)
            self.values = np.concatenate([self.values, np.zeros((size - grown, self.values.shape[1]))])
            self.lo = np.concatenate([self.lo, np.zeros(size - grown, np.int64)])
            self.hi = np.concatenate([self.hi, np.full(size - grown, -FOREVER, np.int64)])

    def read(self, codes: np.ndarray, ts: np.ndarray, compute: Callable[[int, int], tuple[int, int, Sequence[float]]]) -> np.ndarray:
        """(len(codes), width) float64: row r is the read of item codes[r] at moment ts[r], from
        the memo where it holds, else `compute(r, ts[r])` -> (lo, hi, values), kept for the
        item when it has a code (>= 0; an id nobody knows is computed each time, never kept:
        a request's made-up ids must not grow memory)."""
        if len(codes) == 0:
            return np.zeros((0, self.values.shape[1]))
        with self._lock:
            return self._read(codes, ts, compute)

    def _read(self, codes: np.ndarray, ts: np.ndarray, compute: Callable[[int, int], tuple[int, int, Sequence[float]]]) -> np.ndarray:
        self._grow(max(int(codes.max()) + 1, 1))
        known = np.maximum(codes, 0)
        out = self.values[known]
        lo, hi = self.lo[known], self.hi[known]
        stale = np.flatnonzero((codes < 0) | (ts <= lo) | (ts > hi))
        done: dict[tuple[int, int], Sequence[float]] = {}  # a batch asks for an item many times at one moment
        for r, code, t in zip(stale.tolist(), codes[stale].tolist(), ts[stale].tolist()):
            if code < 0:  # unknown: computed, never kept
                out[r] = compute(r, t)[2]
                continue
            values = done.get((code, t))
            if values is None:
                low, high, values = compute(r, t)
                done[code, t] = values
                self.values[code], self.lo[code], self.hi[code] = values, low, high
            out[r] = values
        return out


class Codes:
    """Ids as small integers, shared by every user's counters (each id string is held once)."""

    __slots__ = ("code", "ids")

    def __init__(self) -> None:
        self.code: dict[str, int] = {}
        self.ids: list[str] = []

    def of(self, key: str) -> int:
        code = self.code.get(key)
        if code is None:
            code = self.code[key] = len(self.ids)
            self.ids.append(key)
        return code


class PairCounts(Mapping):
    """One user's (clicks, shown) per key (item or category): codes sorted in one array, the
    counts interleaved in another. Reads like a dict of key -> (clicks, shown)."""

    __slots__ = ("_codes", "_keys", "_values")

    def __init__(self, codes: Codes) -> None:
        self._codes = codes
        self._keys = array("i")
        self._values = array("d")  # clicks, shown of _keys[k] at 2k, 2k + 1

    def _at(self, key: str) -> int:
        code = self._codes.code.get(key)
        if code is None:
            return -1
        k = bisect.bisect_left(self._keys, code)
        return k if k < len(self._keys) and self._keys[k] == code else -1

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        k = self._at(key)
        return default if k < 0 else (self._values[2 * k], self._values[2 * k + 1])

    def __getitem__(self, key: str) -> tuple[float, float]:
        k = self._at(key)
        if k < 0:
            raise KeyError(key)
        return self._values[2 * k], self._values[2 * k + 1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._at(key) >= 0

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        ids = self._codes.ids
        return (ids[code] for code in self._keys)

    def items(self) -> Iterator[tuple[str, tuple[float, float]]]:  # type: ignore[override]
        ids, values = self._codes.ids, self._values
        return ((ids[code], (values[2 * k], values[2 * k + 1])) for k, code in enumerate(self._keys))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the sorted key codes and of their (clicks, shown) rows: what `counts_of` and
        per-user sums over many keys read in one numpy pass."""
        return np.array(self._keys, dtype=np.int32), np.array(self._values, dtype=np.float64).reshape(-1, 2)

    def counts_of(self, codes: np.ndarray) -> np.ndarray:
        """(len(codes), 2) clicks and shown per key code (-1, or a key never counted: 0, 0): `get`
        for many keys at once."""
        keys, values = self.arrays()
        out = np.zeros((len(codes), 2), np.float64)
        if len(keys):
            at = np.minimum(np.searchsorted(keys, codes), len(keys) - 1)
            hit = keys[at] == codes
            out[hit] = values[at[hit]]
        return out

    def add(self, key: str, clicks: float, shown: float) -> None:
        code = self._codes.of(key)
        keys, values = self._keys, self._values
        k = bisect.bisect_left(keys, code)
        if k == len(keys) or keys[k] != code:
            keys.insert(k, code)
            values[2 * k:2 * k] = array("d", (0.0, 0.0))
        values[2 * k] += clicks
        values[2 * k + 1] += shown

    @property
    def nbytes(self) -> int:
        return 4 * len(self._keys) + 8 * len(self._values)


class ItemCounts:
    __slots__ = ("trail", "last_click")

    def __init__(self, trail: Trail, last_click: int | None) -> None:
        self.trail = trail
        self.last_click = last_click  # microseconds


class UserCounts:
    __slots__ = ("clicks", "shown", "last_click", "by_category", "by_item", "_items", "_click_ts", "_click_item",
                 "_dropped", "_history", "_clicked")

    def __init__(self, items: Codes, categories: Codes) -> None:
        self.clicks = 0.0
        self.shown = 0.0
        self.last_click: int | None = None
        self.by_category = PairCounts(categories)  # category -> (clicks, shown)
        self.by_item = PairCounts(items)  # item_id -> (clicks, shown)
        self._items = items
        self._click_ts = array("q")  # the latest clicks, sorted by (ts, item id)
        self._click_item = array("i")
        self._dropped = False  # older clicks were let go
        self._history: tuple[int, float, list[str]] | None = None  # (length, clicks then, ids)
        self._clicked: tuple[float, list[str]] | None = None

    def history(self, length: int) -> list[str]:
        """The last `length` clicked item ids, most recent last (ties in ts: by item id). The
        list is shared by every call until the user's next click (callers only read it): a
        request asks once per candidate row and group."""
        if length <= 0:
            return []
        made = self._history
        if made is None or made[0] != length or made[1] != self.clicks:
            if self._dropped and length > len(self._click_item):
                raise AssertionError(f"bug: a history of {length} clicks; the state keeps the last {KEPT_CLICKS}")
            ids = self._items.ids
            made = self._history = (length, self.clicks, [ids[c] for c in self._click_item[-length:]])
        return made[2]

    def clicked_items(self) -> list[str]:
        """Every item the user ever clicked, each once (the collaborative score reads the set),
        shared until the next click, as `history`."""
        made = self._clicked
        if made is None or made[0] != self.clicks:
            made = self._clicked = (self.clicks, [item for item, (c, _) in self.by_item.items() if c > 0])
        return made[1]

    def take_clicks(self, clicks: list[tuple[int, str]]) -> None:
        """Clicks (ts, item id), sorted, into the latest-clicks arrays."""
        ts, items, codes = self._click_ts, self._click_item, self._items
        if not ts or clicks[0] >= (ts[-1], codes.ids[items[-1]]):  # in order: the usual case
            for t, item in clicks:
                ts.append(t)
                items.append(codes.of(item))
        else:  # a late click
            kept = [(t, codes.ids[c]) for t, c in zip(ts, items)]
            if self._dropped:  # older than every kept one: older than the let-go ones' successors too
                clicks = [c for c in clicks if c >= kept[0]]
            merged = sorted(kept + clicks)
            self._click_ts = ts = array("q", [t for t, _ in merged])
            self._click_item = items = array("i", [codes.of(i) for _, i in merged])
        if len(ts) >= 2 * KEPT_CLICKS:
            del ts[:len(ts) - KEPT_CLICKS]
            del items[:len(items) - KEPT_CLICKS]
            self._dropped = True

    @property
    def nbytes(self) -> int:
        return self.by_category.nbytes + self.by_item.nbytes + 12 * len(self._click_ts)


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
        self.everything = Trail()  # the whole log: global click rates
        self.rows = 0  # events taken in so far
        self.last_ts: int | None = None
        self.horizon: int | None = None  # see set_horizon
        self._folded_at: int | None = None
        self._item_codes, self._category_codes = Codes(), Codes()
        # per-item reads of a request's candidates (`item_memo`), by a code of each catalog or logged item
        self._memo_codes: dict[str, int] = {item: k for k, item in enumerate(self.category)}
        self._memos: dict[tuple, ItemMemo] = {}
        # called with each batch `add` takes in (item_id, ts, clicked columns): sums over keys the
        # state does not know (a run's text topics) follow the log without a pass over every item
        self._listeners: list[Callable[[pl.DataFrame], None]] = []

    @classmethod
    def of(cls, log: pl.DataFrame, items: pl.DataFrame) -> LogState:
        state = cls(items)
        state.add(log)
        return state

    def item_memo(self, read: tuple, width: int) -> ItemMemo:
        """The memo of one per-item read (`read` names it with its parameters, e.g. its windows)."""
        memo = self._memos.get(read)
        if memo is None:
            memo = self._memos[read] = ItemMemo(width)
        return memo

    def memo_codes(self, item_ids: list[str]) -> np.ndarray:
        """Each id's code in the item memos (-1: neither in the catalog nor in the log)."""
        code = self._memo_codes.get
        return np.array([code(i, -1) for i in item_ids], dtype=np.int64)

    def user_codes(self, item_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each id's code in users' per-item counts and its category's in their per-category
        counts (int32; -1: no user's counts have it yet)."""
        item, category_code, category = self._item_codes.code.get, self._category_codes.code.get, self.category.get
        return (np.array([item(i, -1) for i in item_ids], dtype=np.int32),
                np.array([category_code(category(i, UNKNOWN_CATEGORY), -1) for i in item_ids], dtype=np.int32))

    def before(self, ts: np.ndarray) -> bool:
        """Whether every event taken in is strictly earlier than every moment in `ts`."""
        return self.last_ts is None or bool(len(ts) == 0 or ts.min() > self.last_ts)

    def on_add(self, listener: Callable[[pl.DataFrame], None]) -> None:
        """Call `listener` with every later batch of events (item_id, ts in µs, clicked 0/1.0)."""
        self._listeners.append(listener)

    def set_horizon(self, horizon_us: int | None) -> None:
        """Fold, from the next `add` or `fold` on, the events older than `horizon_us` before the
        newest one into per-key totals (every eighth of a horizon of event time: memory holds
        about 1.125 horizons of events). Every window a feature reads from a moment after the
        log must be at most `horizon_us` long (`features.behavioural.horizon_of`); None: keep every event."""
        self.horizon = horizon_us
        self._folded_at = None

    def fold(self) -> None:
        """Fold now (see `set_horizon`); nothing without a horizon."""
        if self.horizon is None or self.last_ts is None:
            return
        # a moment after the log is > last_ts: its window starts at or after this edge
        edge = self.last_ts + 1 - self.horizon
        self.everything.fold(edge)
        for counts in self.items.values():
            counts.trail.fold(edge)
        for memo in self._memos.values():
            memo.drop()
        self._folded_at = edge

    def size(self) -> dict[str, int]:
        """What the counters hold: moments kept in item trails and the global one, users,
        (user, key) pairs, clicks kept for histories, and the bytes of their arrays."""
        users = self.users.values()
        return {
            "item_moments": sum(len(c.trail) for c in self.items.values()), "global_moments": len(self.everything),
            "users": len(self.users), "pairs": sum(len(u.by_item) + len(u.by_category) for u in users),
            "kept_clicks": sum(len(u._click_ts) for u in users),
            "bytes": self.everything.nbytes + sum(c.trail.nbytes for c in self.items.values()) + sum(u.nbytes for u in users),
        }

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
        self.everything.add(ts, clicked)
        self.last_ts = _later(self.last_ts, int(ts.max()))
        self._add_items(ev)
        self._add_users(ev)
        self.rows += events.height
        for listener in self._listeners:
            listener(ev)
        if self.horizon is not None and (self._folded_at is None
                                         or self.last_ts + 1 - self.horizon - self._folded_at >= max(self.horizon // 8, 1)):
            self.fold()

    def _add_items(self, ev: pl.DataFrame) -> None:
        by_item = ev.group_by("item_id").agg(
            "ts", "clicked", last_click=pl.col("ts").filter(pl.col("clicked") > 0).max()
        )
        for item, ts, clicked, last_click in by_item.iter_rows():
            known = self.items.get(item)
            if known is None:
                known = self.items[item] = ItemCounts(Trail(), None)
            known.trail.add(np.asarray(ts, np.int64), np.asarray(clicked, np.float64))
            known.last_click = _later(known.last_click, last_click)
            code = self._memo_codes.setdefault(item, len(self._memo_codes))
            for memo in self._memos.values():
                memo.drop(code)

    def _add_users(self, ev: pl.DataFrame) -> None:
        totals = ev.group_by("user_id").agg(
            clicks=pl.col("clicked").sum(), shown=pl.len().cast(pl.Float64),
            last_click=pl.col("ts").filter(pl.col("clicked") > 0).max(),
        )
        users = self.users
        for user, clicks, shown, last_click in totals.iter_rows():
            counts = users.get(user)
            if counts is None:
                counts = users[user] = UserCounts(self._item_codes, self._category_codes)
            counts.clicks += clicks
            counts.shown += shown
            counts.last_click = _later(counts.last_click, last_click)
        for key in ("category", "item_id"):
            pairs = ev.group_by("user_id", key).agg(clicks=pl.col("clicked").sum(), shown=pl.len().cast(pl.Float64))
            for user, value, clicks, shown in pairs.iter_rows():
                table = users[user].by_category if key == "category" else users[user].by_item
                table.add(value, clicks, shown)
        clicks = ev.filter(pl.col("clicked") > 0).sort("user_id", "ts", "item_id")
        mine: list[tuple[int, str]] = []
        last_user = None
        for user, ts, item in clicks.select("user_id", "ts", "item_id").iter_rows():
            if user != last_user and mine:
                users[last_user].take_clicks(mine)  # type: ignore[index]
                mine = []
            last_user = user
            mine.append((ts, item))
        if mine:
            users[last_user].take_clicks(mine)  # type: ignore[index]
