"""The live event log behind online features: training state + durable feedback, and its clock.

Features are computed by the same registered feature groups as in training and batch scoring,
over this log. Per request the log is cut down to the events of the request's user and candidate
items, which yields exactly the features of the full log because every per-key aggregate only
reads its own key's events; the global rates come from running totals kept for the whole log
(`features.pointintime.global_totals`). A test checks the two give identical scores.

Bounded on disk: once `feedback.jsonl` passes `compact_bytes`, the replica that wrote last folds
it into `feedback-snapshot.parquet` and starts a new `feedback.jsonl` (with a header line naming
it), all under the log's lock. The snapshot records which file and how many of its bytes it holds,
so a kill -9 at any step leaves a state that restarts with every acknowledged event exactly once:
before the snapshot is renamed in, the old snapshot and the old file; after, the new snapshot and
the rest of the old file; after the new file is renamed in, the new snapshot and the new file.
Other replicas notice the new file (its inode) and take the snapshot rows they had not seen.

Bounded in memory: requests "now" read each arm's live counters (features/state.py), which fold
old events. The frame of events is kept only for requests dated before the newest event (ranked
point in time from it), and lets its feedback rows go once it holds `live_rows` of them: the
training log stays, the rows let go are on disk, and counters that still need them (a model
loaded later, a restart) read them back in blocks (`OnlineState.replay`). From then on a request's
own earlier moment is ranked exactly up to the first row let go (`complete_until`) and refused
with a reason after it, never answered from a frame that misses events.

Feedback for items no arm's catalog knows is written to `feedback-unknown-items.jsonl` (durably,
counted) and kept out of the counters: ids made up by a client must not grow the state or steer
the behaviour features.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl

from features.pointintime import global_totals
from recsys.core.schemas import EVENTS_SCHEMA
from serving.eventlog import SEGMENT_KEY, JsonlLog, encode, open_locked, segment_of

FEEDBACK_FILE = "feedback.jsonl"
ASIDE_FILE = "feedback-unknown-items.jsonl"
SNAPSHOT_FILE = "feedback-snapshot.parquet"
EXTRA_COLUMNS = {"arm": pl.String, "received_at": pl.String}  # kept in the snapshot for the A/B report
TICK = timedelta(microseconds=1)
log = logging.getLogger(__name__)


class PointInTimeRefused(ValueError):
    """A request's own earlier moment the live frame can no longer rank exactly (the message says why)."""


@dataclass(frozen=True)
class LogSnapshot:
    """One consistent view: swapped as a whole, so readers never see half an update.

    `log` is the training log (its first `base_rows` rows) and the feedback taken in since the
    frame last let go of its feedback rows (see `OnlineState`, `live_rows`); the rows let go are
    on disk (`replay`). Every event earlier than `complete_until` is still in `log` (None: no row
    was ever let go), so ranking point in time is exact up to that moment and refused after it."""

    log: pl.DataFrame
    totals: pl.DataFrame  # global_totals of `log`
    last_ts: datetime | None
    offset: int  # bytes of the current feedback file taken in
    inode: int = 0  # which feedback file that is (a compaction replaces it)
    feedback_rows: int = 0  # feedback events taken in, snapshot and file together
    base_rows: int = 0  # the training log's rows, at the front of `log`
    complete_until: datetime | None = None  # the earliest moment of a feedback row let go from `log`
    replay: Callable[[int], Iterator[pl.DataFrame]] | None = None  # the first n feedback rows, from disk

    @property
    def taken(self) -> int:
        """Rows taken in since the start, training log and feedback, kept in `log` or let go."""
        return self.base_rows + self.feedback_rows

    def since(self, rows: int) -> pl.DataFrame | None:
        """The rows taken in after the first `rows`, or None when some of them were let go."""
        first_kept = self.taken - self.log.height + self.base_rows  # position of log row base_rows
        if rows < self.base_rows:
            return self.log.slice(rows) if first_kept == self.base_rows else None
        if rows < first_kept:
            return None
        return self.log.slice(self.base_rows + rows - first_kept)

    def every_row(self) -> Iterator[pl.DataFrame]:
        """Every row taken in, in order, a block at a time: the training log, then the feedback
        (from memory while none was let go, else read back from disk)."""
        if self.complete_until is None or self.replay is None:
            yield self.log
            return
        yield self.log.head(self.base_rows)
        yield from self.replay(self.feedback_rows)

    def point_in_time_refusal(self, ts: datetime) -> str | None:
        """Why ranking as of `ts` cannot be served exactly, or None when it can: moments after
        the newest event read the live counters; earlier ones need every event before them."""
        if self.complete_until is None or self.last_ts is None or ts > self.last_ts or ts <= self.complete_until:
            return None
        return (f"context.ts {ts.isoformat()} is before the newest event ({self.last_ts.isoformat()}) and after "
                f"{self.complete_until.isoformat()}, since when this replica no longer keeps every event in memory "
                "(live_rows): rank point in time at or before that moment, or leave context.ts out to rank now")

    def view(self, user_ids: list[str], item_ids: list[str]) -> pl.DataFrame:
        """The events of these users and of these items: all the per-key features read."""
        return self.log.filter(pl.col("user_id").is_in(user_ids) | pl.col("item_id").is_in(item_ids))


@dataclass(frozen=True)
class Appended:
    size: int  # bytes in the feedback file after the write
    accepted: int  # events that went into the live log
    aside: int  # events for unknown items, kept in ASIDE_FILE


def feedback_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Feedback log rows -> the events schema plus the arm and when the service received them."""
    schema = {**EVENTS_SCHEMA, **EXTRA_COLUMNS}
    if not rows:
        return pl.Schema(schema).to_frame()
    frame = pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema_overrides={"ts": pl.String})
    return frame.with_columns(
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"),
    ).select(pl.col(c).cast(t) for c, t in schema.items())


def events_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Feedback log rows -> the events schema (extra keys such as `arm` are dropped here)."""
    return feedback_frame(rows).select(EVENTS_SCHEMA.names())


def snapshot_meta(path: Path) -> tuple[int, str | None, int]:
    """How many rows the snapshot holds, the id of the feedback file it was last folded from,
    and how many bytes of that file it holds (no snapshot: 0, None, 0). Reads the footer only."""
    if not path.exists():
        return 0, None, 0
    meta = pl.read_parquet_metadata(path)
    rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    return int(rows), meta.get("segment") or None, int(meta.get("absorbed_bytes", "0"))


def read_snapshot(path: Path, skip: int = 0) -> tuple[pl.DataFrame, str | None, int]:
    """The compacted feedback (after its first `skip` rows), the id of the feedback file it was
    last folded from, and how many bytes of that file it holds (no snapshot: empty, None, 0)."""
    if not path.exists():
        return feedback_frame([]), None, 0
    meta = pl.read_parquet_metadata(path)
    segment = meta.get("segment") or None
    frame = pl.scan_parquet(path).slice(skip).collect() if skip else pl.read_parquet(path)
    return frame, segment, int(meta.get("absorbed_bytes", "0"))


def parse_frames(log: JsonlLog, data: bytes, offset: int, make: Callable[[list[dict[str, Any]]], pl.DataFrame],
                 block_bytes: int = 4 << 20) -> tuple[pl.DataFrame, int, int]:
    """`log.parse` of `data` (read at byte `offset`) made into a frame by `make` a block of lines
    at a time: a 64 MiB file costs one block's dicts, not a file's (their memory stays with the
    process). Returns the frame, the offset after the last complete line, and the rows."""
    end, pos, frames = data.rfind(b"\n") + 1, 0, []
    while pos < end:
        cut = data.find(b"\n", min(pos + block_bytes, end) - 1) + 1
        rows, _ = log.parse(data[pos:cut], offset + pos)
        if rows:
            frames.append(make(rows))
        pos = cut
    frame = pl.concat(frames) if len(frames) > 1 else frames[0] if frames else make([])
    return frame, offset + end, frame.height


def read_feedback(state_dir: Path) -> list[dict[str, Any]]:
    """Every feedback row of a state directory in the order it was written: snapshot, then file."""
    state_dir = Path(state_dir)
    frame, segment, absorbed = read_snapshot(state_dir / SNAPSHOT_FILE)
    log = JsonlLog(state_dir / FEEDBACK_FILE)
    start = absorbed if segment_of(log.path) == segment else 0
    rows = frame.with_columns(pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.f+00:00")).to_dicts()
    return rows + log.read_from(start)[0]


class OnlineState:
    def __init__(self, base_log: pl.DataFrame, state_dir: Path, clock: str = "log",
                 known_item: Callable[[str], bool] | None = None, compact_bytes: int = 0, live_rows: int = 0,
                 before_letting_go: Callable[[LogSnapshot], None] | None = None) -> None:
        """`known_item`: whether an item id is in a catalog (None: every id is); `compact_bytes`:
        fold the feedback file into the snapshot once it is this big (0: never); `live_rows`: let
        the frame's feedback rows go once it holds more than this many (0: keep every row);
        `before_letting_go`: called with the full snapshot first (the service brings every arm's
        counters up to it, so none has to read the rows back from disk)."""
        if clock not in ("log", "wall"):
            raise ValueError(f"clock={clock!r}, expected 'log' or 'wall'")
        self.clock = clock
        self.state_dir = Path(state_dir)
        self.feedback = JsonlLog(self.state_dir / FEEDBACK_FILE)
        self.aside = JsonlLog(self.state_dir / ASIDE_FILE)
        self.snapshot_path = self.state_dir / SNAPSHOT_FILE
        self.known_item = known_item
        self.compact_bytes = compact_bytes
        self.compactions = 0
        self.live_rows = live_rows
        self.before_letting_go = before_letting_go
        base = base_log.select(pl.col(c).cast(t) for c, t in EVENTS_SCHEMA.items())
        last: datetime | None = base["ts"].max()  # type: ignore[assignment]
        self._snapshot = LogSnapshot(base, global_totals(base), last, 0, base_rows=base.height, replay=self.replay)
        self._lock = threading.Lock()
        self.refresh()

    def snapshot(self) -> LogSnapshot:
        return self._snapshot

    def refresh(self) -> LogSnapshot:
        """Take in feedback appended since the last look (by any replica); cheap when there is none."""
        snap = self._snapshot
        st = os.stat(self.feedback.path)
        if st.st_ino == snap.inode and st.st_size <= snap.offset:
            return snap
        with self._lock:
            snap = self._snapshot
            with open(self.feedback.path, "rb") as f:
                # read through this handle: a compaction that swaps the file meanwhile cannot
                # make us read the new file from the old file's offset
                if os.fstat(f.fileno()).st_ino != snap.inode:
                    return self._resync(snap)
                f.seek(snap.offset)
                data = f.read()
            rows, offset = self.feedback.parse(data, snap.offset)
            self._snapshot = self._taken_in(snap, events_frame(rows), offset, snap.inode, snap.feedback_rows + len(rows))
            return self._snapshot

    def _resync(self, snap: LogSnapshot) -> LogSnapshot:
        """First look, or another replica compacted: under the file's lock (so no compaction runs
        meanwhile), the snapshot rows not yet taken in, then the new file."""
        fd = open_locked(self.feedback.path)
        try:
            held, segment, absorbed = snapshot_meta(self.snapshot_path)
            # only the snapshot rows not taken in yet (none, for the replica that compacted)
            missed = (read_snapshot(self.snapshot_path, snap.feedback_rows)[0] if held > snap.feedback_rows
                      else feedback_frame([])).select(EVENTS_SCHEMA.names())
            start = absorbed if segment_of(self.feedback.path) == segment else 0
            size = os.fstat(fd).st_size
            fresh, offset, n = parse_frames(self.feedback, os.pread(fd, size - start, start), start, events_frame)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)  # closing releases the lock
        new = pl.concat([missed, fresh])
        self._snapshot = self._taken_in(snap, new, offset, inode, held + n)
        return self._snapshot

    def _taken_in(self, snap: LogSnapshot, new: pl.DataFrame, offset: int, inode: int, feedback_rows: int) -> LogSnapshot:
        if new.height == 0:
            return replace(snap, offset=offset, inode=inode, feedback_rows=feedback_rows)
        log = pl.concat([snap.log, new], rechunk=False)
        if log.n_chunks() > 64:
            log = log.rechunk()
        new_last: datetime = new["ts"].max()  # type: ignore[assignment]
        if snap.last_ts is not None and new["ts"].min() > snap.last_ts:  # type: ignore[operator]
            totals = _extend_totals(snap.totals, new)
        else:  # late events: recount (rare, and one pass over the log)
            totals = global_totals(log)
        last = max(snap.last_ts, new_last) if snap.last_ts else new_last
        complete_until = snap.complete_until
        if self.live_rows and log.height - snap.base_rows > self.live_rows:
            # let the feedback rows go (the counters took them in or read them back from disk):
            # the frame and its totals stay at most the training log and live_rows of feedback
            earliest: datetime = log["ts"].slice(snap.base_rows).min()  # type: ignore[assignment]
            complete_until = earliest if complete_until is None else min(complete_until, earliest)
            if self.before_letting_go is not None:
                self.before_letting_go(replace(snap, log=log, totals=totals, last_ts=last, offset=offset, inode=inode,
                                               feedback_rows=feedback_rows))
            log = log.head(snap.base_rows).rechunk()
            totals = global_totals(log)
        return replace(snap, log=log, totals=totals, last_ts=last, offset=offset, inode=inode,
                       feedback_rows=feedback_rows, complete_until=complete_until)

    def replay(self, rows: int, block_rows: int = 100_000) -> Iterator[pl.DataFrame]:
        """The first `rows` feedback events in the order they were taken in (snapshot, then
        file), `block_rows` at a time: what counters built after the frame let rows go read."""
        fd = open_locked(self.feedback.path)
        try:  # under the lock: the snapshot's footer and the file it names agree
            held, segment, absorbed = snapshot_meta(self.snapshot_path)
            start = absorbed if segment_of(self.feedback.path) == segment else 0
            data = os.pread(fd, os.fstat(fd).st_size - start, start) if rows > held else b""
        finally:
            os.close(fd)
        # a later compaction only appends to the snapshot: its first `held` rows stay these
        for lo in range(0, min(rows, held), block_rows):
            yield (pl.scan_parquet(self.snapshot_path).slice(lo, min(block_rows, rows - lo))
                   .select(EVENTS_SCHEMA.names()).collect())
        left = rows - min(rows, held)
        if left:
            fresh = parse_frames(self.feedback, data, start, events_frame)[0]
            yield fresh.head(left)

    def now(self) -> datetime:
        """The service clock. "log": just after the newest logged event (replays and demos of
        historical logs: features see what training saw); "wall": the system clock, never before
        the newest event (a live shop)."""
        last = self._snapshot.last_ts
        after_log = (last + TICK) if last is not None else datetime.now(timezone.utc)
        if self.clock == "wall":
            return max(datetime.now(timezone.utc), after_log)
        return after_log

    def append(self, rows: list[dict[str, Any]]) -> Appended:
        """Durably append feedback rows (each with a ts) and take them in; events for unknown
        items go to the aside file instead. Raises StorageFull when the disk is full (then
        nothing of this call was kept, either file)."""
        known = rows if self.known_item is None else [r for r in rows if self.known_item(r["item_id"])]
        aside = [] if self.known_item is None else [r for r in rows if not self.known_item(r["item_id"])]
        if aside:  # first: a full disk here refuses the whole call before any counted event is written
            self.aside.append(aside, durable=True)
        size = self.feedback.append(known, durable=True) if known else os.stat(self.feedback.path).st_size
        if self.compact_bytes and size >= self.compact_bytes:
            try:
                self.compact()
            except Exception as err:  # the events are written and acknowledged: a failed compaction only waits
                log.warning("compacting %s failed (%s); the file stays as it is, the next append tries again",
                            self.feedback.path, err)
        self.refresh()
        return Appended(size, len(known), len(aside))

    def compact(self) -> bool:
        """Fold the feedback file into the snapshot and start a new, empty one (see the module
        docstring for why a kill at any step loses nothing). False when another replica just did."""
        fd = open_locked(self.feedback.path)
        try:
            size = os.fstat(fd).st_size
            if not self.compact_bytes or size < self.compact_bytes:
                return False
            held, segment, absorbed = snapshot_meta(self.snapshot_path)
            current = segment_of(self.feedback.path)
            start = absorbed if current == segment else 0
            taken, end, n = parse_frames(self.feedback, os.pread(fd, size - start, start), start, feedback_frame)
            # streamed: the old snapshot is copied through, not read into memory whole
            merged = pl.concat([pl.scan_parquet(self.snapshot_path), taken.lazy()]) if held else taken.lazy()
            tmp = self.snapshot_path.with_suffix(".parquet.tmp")
            fresh = self.feedback.path.with_suffix(".jsonl.tmp")
            try:
                # 1. the snapshot, holding this file up to `end` (a torn tail past it was never acknowledged)
                merged.sink_parquet(tmp, metadata={"segment": current or "", "absorbed_bytes": str(end)})
                _fsync_path(tmp)
                os.replace(tmp, self.snapshot_path)
                _fsync_path(self.state_dir)
                # 2. a new feedback file, named by its header line
                fresh.write_bytes(encode([{SEGMENT_KEY: uuid.uuid4().hex, "after_rows": held + n}]))
                _fsync_path(fresh)
                os.replace(fresh, self.feedback.path)
                _fsync_path(self.state_dir)
            finally:  # a half-written temporary (a full disk) is space we need back
                tmp.unlink(missing_ok=True)
                fresh.unlink(missing_ok=True)
            self.compactions += 1
            return True
        finally:
            os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _extend_totals(totals: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Running totals for events all later than the last counted one: continue the sums."""
    base_clicks = totals["_cum_clicks"][-1] if totals.height else 0.0
    base_shown = totals["_cum_shown"][-1] if totals.height else 0.0
    more = global_totals(new).with_columns(pl.col("_cum_clicks") + base_clicks, pl.col("_cum_shown") + base_shown)
    totals = pl.concat([totals, more], rechunk=False)
    # one chunk per feedback call would cost more in chunk overhead than in data over a long day
    return totals.rechunk() if totals.n_chunks() > 64 else totals
