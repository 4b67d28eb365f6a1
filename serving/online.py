"""The live event log behind online features: training state + durable feedback, and its clock.

Features are computed by the same registered feature groups as in training and batch scoring,
over this log. Per request the log is cut down to the events of the request's user and candidate
items, which yields exactly the features of the full log because every per-key aggregate only
reads its own key's events; the global rates come from running totals kept for the whole log
(`features.pointintime.global_totals`). A test checks the two give identical scores.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl

from features.pointintime import global_totals
from recsys.schemas import EVENTS_SCHEMA
from serving.eventlog import JsonlLog

FEEDBACK_FILE = "feedback.jsonl"
TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class LogSnapshot:
    """One consistent view: swapped as a whole, so readers never see half an update."""

    log: pl.DataFrame
    totals: pl.DataFrame
    last_ts: datetime | None
    offset: int

    def view(self, user_ids: list[str], item_ids: list[str]) -> pl.DataFrame:
        """The events of these users and of these items: all the per-key features read."""
        return self.log.filter(pl.col("user_id").is_in(user_ids) | pl.col("item_id").is_in(item_ids))


def events_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Feedback log rows -> the events schema (extra keys such as `arm` are dropped here)."""
    if not rows:
        return EVENTS_SCHEMA.to_frame()
    frame = pl.DataFrame([{c: r.get(c) for c in EVENTS_SCHEMA} for r in rows], schema_overrides={"ts": pl.String})
    return frame.with_columns(
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"),
    ).select(pl.col(c).cast(t) for c, t in EVENTS_SCHEMA.items())


class OnlineState:
    def __init__(self, base_log: pl.DataFrame, state_dir: Path, clock: str = "log") -> None:
        if clock not in ("log", "wall"):
            raise ValueError(f"clock={clock!r}, expected 'log' or 'wall'")
        self.clock = clock
        self.feedback = JsonlLog(Path(state_dir) / FEEDBACK_FILE)
        base = base_log.select(pl.col(c).cast(t) for c, t in EVENTS_SCHEMA.items())
        last: datetime | None = base["ts"].max()  # type: ignore[assignment]
        self._snapshot = LogSnapshot(base, global_totals(base), last, 0)
        self._lock = threading.Lock()
        self.refresh()

    def snapshot(self) -> LogSnapshot:
        return self._snapshot

    def refresh(self) -> LogSnapshot:
        """Take in feedback appended since the last look (by any replica); cheap when there is none."""
        snap = self._snapshot
        if self.feedback.path.stat().st_size <= snap.offset:
            return snap
        with self._lock:
            snap = self._snapshot
            rows, offset = self.feedback.read_from(snap.offset)
            new = events_frame(rows)
            if new.height == 0:
                self._snapshot = LogSnapshot(snap.log, snap.totals, snap.last_ts, offset)
                return self._snapshot
            log = pl.concat([snap.log, new], rechunk=False)
            if log.n_chunks() > 64:
                log = log.rechunk()
            new_last: datetime = new["ts"].max()  # type: ignore[assignment]
            if snap.last_ts is not None and new["ts"].min() > snap.last_ts:  # type: ignore[operator]
                totals = _extend_totals(snap.totals, new)
            else:  # late events: recount (rare, and one pass over the log)
                totals = global_totals(log)
            last = max(snap.last_ts, new_last) if snap.last_ts else new_last
            self._snapshot = LogSnapshot(log, totals, last, offset)
            return self._snapshot

    def now(self) -> datetime:
        """The service clock. "log": just after the newest logged event (replays and demos of
        historical logs: features see what training saw); "wall": the system clock, never before
        the newest event (a live shop)."""
        last = self._snapshot.last_ts
        after_log = (last + TICK) if last is not None else datetime.now(timezone.utc)
        if self.clock == "wall":
            return max(datetime.now(timezone.utc), after_log)
        return after_log

    def append(self, rows: list[dict[str, Any]]) -> int:
        """Durably append feedback rows (each with a ts) and take them in; returns the log's size."""
        size = self.feedback.append(rows, durable=True)
        self.refresh()
        return size


def _extend_totals(totals: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Running totals for events all later than the last counted one: continue the sums."""
    base_clicks = totals["_cum_clicks"][-1] if totals.height else 0.0
    base_shown = totals["_cum_shown"][-1] if totals.height else 0.0
    more = global_totals(new).with_columns(pl.col("_cum_clicks") + base_clicks, pl.col("_cum_shown") + base_shown)
    return pl.concat([totals, more])
