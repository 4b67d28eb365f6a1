"""The ranking service without HTTP: arms (A/B), the live log, ranking, feedback, hot swaps.

The FastAPI routes (serving/http.py) and the Ray Serve deployment (serving/deploy.py) are thin
layers over this class, so tests can drive it directly too.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from recsys.core.stopwatch import stage
from serving.api_models import FeedbackRequest, FeedbackResponse, Health, ModelInfo, RankRequest, RankResponse
from serving.eventlog import JsonlLog
from serving.online import LogSnapshot, OnlineState, PointInTimeRefused
from serving.ranking import Ask, Ranking, RankingModel, served_record
from serving.refs import is_registry_ref, resolve

log = logging.getLogger(__name__)
SERVED_FILE = "served.jsonl"
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class ServeSettings:
    model: str = "models:/recsys-ranker@champion"  # a registry ref or a run directory
    challenger: str | None = None  # second arm for an A/B split
    challenger_share: float = 0.0  # of users (sticky by hash), 0..1
    state_dir: str = "serving_state"  # feedback.jsonl (durable) and served.jsonl (features served)
    served_rotate_bytes: int = 64 * 1024 * 1024  # served.jsonl is rotated to served.<n>.jsonl at this size (0: never)
    served_keep: int = 8  # rotated served files kept (the oldest beyond them are deleted), at least 1
    clock: str = "log"  # "log" or "wall", see OnlineState.now
    max_candidates: int = 500
    max_feedback_events: int = 1000
    reload_seconds: float = 30.0  # how often registry aliases are checked for a new version
    tracking_uri: str = ""
    ab_salt: str = "recsys-ab"
    api_key: str | None = None  # when set, every /v1/* call needs it (X-API-Key or Authorization: Bearer)
    max_body_bytes: int = 1_000_000
    # abuse limits, per replica (0 = off): /v1/rank requests/s and /v1/feedback events/s, per API
    # key (the client address without a key) and per user_id; a bucket holds burst_seconds of its rate
    rank_per_key: float = 500.0
    rank_per_user: float = 20.0
    feedback_per_key: float = 5000.0
    feedback_per_user: float = 50.0
    burst_seconds: float = 10.0
    compact_bytes: int = 64 * 1024 * 1024  # fold feedback.jsonl into a parquet snapshot at this size (0: never)
    storage_retry_seconds: int = 5  # Retry-After of a 503 when the disk is full
    # feedback rows the in-memory frame holds before it lets them go (0: keep all); the counters
    # keep serving "now", and a request's own earlier ts is ranked only up to the first row let go
    live_rows: int = 200_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.challenger_share <= 1.0:
            raise ValueError(f"challenger_share={self.challenger_share}, expected 0..1")
        if self.challenger_share > 0 and not self.challenger:
            raise ValueError("challenger_share > 0 needs a challenger model")
        if self.live_rows < 0:
            raise ValueError(f"live_rows={self.live_rows}, expected 0 (keep every row) or more")
        if self.served_keep < 1 or self.served_rotate_bytes < 0:
            raise ValueError(f"served_keep={self.served_keep}, served_rotate_bytes={self.served_rotate_bytes}: "
                             "keep at least 1 rotated file, rotate at 0 (never) or more bytes")

    def to_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:  # never print the key into a log
        shown = {**asdict(self), "api_key": "***" if self.api_key else None}
        return f"ServeSettings({shown})"


class RequestError(Exception):
    """A bad request the client can fix: HTTP `status`, the offending field's location, a message."""

    def __init__(self, loc: list[str | int], message: str, status: int = 422) -> None:
        super().__init__(message)
        self.loc, self.message, self.status = loc, message, status


def arm_of(user_id: str, settings: ServeSettings) -> str:
    """Sticky per user: the same user always lands in the same arm for a given salt."""
    if not settings.challenger or settings.challenger_share <= 0:
        return CHAMPION
    bucket = int.from_bytes(hashlib.sha256(f"{settings.ab_salt}:{user_id}".encode()).digest()[:8], "big") % 10_000
    return CHALLENGER if bucket < settings.challenger_share * 10_000 else CHAMPION


class RankingService:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        refs = {CHAMPION: settings.model, **({CHALLENGER: settings.challenger} if settings.challenger else {})}
        self.refs = refs
        self.arms: dict[str, RankingModel] = {arm: RankingModel(resolve(ref, settings.tracking_uri), arm) for arm, ref in refs.items()}
        state_dir = Path(settings.state_dir)
        # the champion's training-state log seeds the live log; feedback extends it
        # feedback for an item no arm's catalog knows is kept aside, out of the counters
        # a model without counter twins computes every request from the frame: it must keep every row
        counted = all(m.scorer.has_twins for m in self.arms.values())
        if settings.live_rows and not counted:
            log.warning("a model has feature groups without live counters: the live log keeps every feedback row in memory")
        self.state = OnlineState(self.arms[CHAMPION].scorer.log, state_dir, settings.clock,
                                 known_item=lambda i: any(i in m.catalog for m in self.arms.values()),
                                 compact_bytes=settings.compact_bytes, live_rows=settings.live_rows if counted else 0,
                                 before_letting_go=self._catch_up)
        for model in self.arms.values():  # counters built now, not on the first request
            model.catch_up(self.state.snapshot())
        self.served = ServedWriter(ServedLog(state_dir / SERVED_FILE, settings.served_rotate_bytes, settings.served_keep))
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _catch_up(self, snapshot: LogSnapshot) -> None:
        """Every arm's counters up to `snapshot` (the frame is about to let its rows go)."""
        for model in list(self.arms.values()):
            model.take_in(snapshot)

    # -- requests ---------------------------------------------------------------------------
    def check(self, req: RankRequest) -> None:
        """The configured limits (the schema's are hard ceilings): a RequestError names the field."""
        limit = self.settings.max_candidates
        if len(req.item_ids) > limit:
            raise RequestError(["body", "item_ids"], f"{len(req.item_ids)} candidates; at most {limit} are allowed")
        seen: dict[str, int] = {}
        for n, item_id in enumerate(req.item_ids):
            if item_id in seen:
                raise RequestError(["body", "item_ids", n], f"duplicate item id {item_id!r} (first at index {seen[item_id]})")
            seen[item_id] = n
        if req.context.ts is not None:
            refusal = self.state.snapshot().point_in_time_refusal(_utc(req.context.ts))
            if refusal:
                raise RequestError(["body", "context", "ts"], refusal)

    def rank(self, req: RankRequest) -> RankResponse:
        with stage("validate"):
            self.check(req)
        return self.rank_many([req])[0]

    def rank_many(self, reqs: list[RankRequest]) -> list[RankResponse]:
        """Checked requests, ranked together per arm (one feature pass, one LightGBM call)."""
        with stage("refresh"):
            snapshot = self.state.refresh()
        now = self.state.now()
        arms = [arm_of(r.user_id, self.settings) for r in reqs]
        responses: list[RankResponse | None] = [None] * len(reqs)
        for arm in sorted(set(arms)):
            model = self.arms[arm]  # read once: a hot swap mid-batch does not mix two models
            which = [n for n, a in enumerate(arms) if a == arm]
            asks = [Ask(reqs[n].user_id, reqs[n].item_ids, _utc(reqs[n].context.ts) if reqs[n].context.ts else now,
                        min(reqs[n].top_k or len(reqs[n].item_ids), len(reqs[n].item_ids)), reqs[n].explain) for n in which]
            rankings = self._ranked(model, snapshot, asks)
            served = []
            for n, ask, ranking in zip(which, asks, rankings):
                req, request_id = reqs[n], uuid.uuid4().hex
                served.append((request_id, ask.ts, req.user_id, ranking, req.context.model_dump(mode="json")))
                with stage("response"):
                    responses[n] = RankResponse(
                        request_id=request_id, user_id=req.user_id, arm=arm, model_version=model.info.version, ts=ask.ts,
                        known_user=ranking.known_user,
                        unknown_items=sum(1 for i in req.item_ids if i not in model.catalog), items=ranking.items,
                    )

            def records(arm: str = arm, model: RankingModel = model, served: list = served) -> list[dict]:
                return [served_record(request_id, arm, model.info.version, ts, user_id, ranking, model.feature_names, context)
                        for request_id, ts, user_id, ranking, context in served]

            with stage("served_log"):
                self.served.put(records)
        return responses  # type: ignore[return-value]

    @staticmethod
    def _ranked(model: RankingModel, snapshot: LogSnapshot, asks: list[Ask]) -> list[Ranking]:
        """Rankings in ask order; asks "now" and asks of an earlier moment (point in time) go in
        separate calls, so one replayed request in a batch does not send the others to the slow path."""
        past = [n for n, a in enumerate(asks) if snapshot.last_ts is not None and a.ts <= snapshot.last_ts]
        if not past or len(past) == len(asks):
            try:
                return model.rank_many(snapshot, asks)
            except PointInTimeRefused as err:
                raise RequestError(["body", "context", "ts"], str(err)) from err
        now = sorted(set(range(len(asks))) - set(past))
        out: list[Ranking | None] = [None] * len(asks)
        for group in (now, past):
            for n, ranking in zip(group, RankingService._ranked(model, snapshot, [asks[n] for n in group])):
                out[n] = ranking
        return out  # type: ignore[return-value]

    def feedback(self, req: FeedbackRequest) -> FeedbackResponse:
        limit = self.settings.max_feedback_events
        if len(req.events) > limit:
            raise RequestError(["body", "events"], f"{len(req.events)} events; at most {limit} per call are allowed")
        now = self.state.now()
        received = datetime.now(timezone.utc).isoformat()
        rows = []
        for event in req.events:
            ts = _utc(event.ts) if event.ts else now
            rows.append({
                "request_id": event.request_id or f"{event.user_id}#online", "user_id": event.user_id,
                "item_id": event.item_id, "ts": ts.isoformat(), "position": event.position, "clicked": event.clicked,
                "rating": event.rating, "arm": arm_of(event.user_id, self.settings), "received_at": received,
            })
        written = self.state.append(rows)
        return FeedbackResponse(accepted=written.accepted, unknown_items=written.aside, log_offset=written.size)

    def health(self) -> Health:
        return Health(status="ok", arms={a: m.info.version for a, m in self.arms.items()},
                      events=self.state.snapshot().taken)

    def model_info(self) -> list[ModelInfo]:
        return [m.info for m in self.arms.values()]

    # -- the demo page's pickers ---------------------------------------------------------------
    def demo_users(self, limit: int) -> list[dict]:
        """The most active users, with their latest clicked titles, to pick from."""
        import polars as pl

        model = self.arms[CHAMPION]
        clicks = self.state.snapshot().log.filter(pl.col("clicked") == 1).sort("ts")
        top = (
            clicks.group_by("user_id")
            .agg(clicks=pl.len(), recent=pl.col("item_id").tail(3))
            .sort(["clicks", "user_id"], descending=[True, False])
            .head(limit)
        )
        return [{"user_id": r["user_id"], "clicks": r["clicks"],
                 "recent": [(model.catalog.get(i) or {}).get("title") or i for i in r["recent"]]} for r in top.to_dicts()]

    def demo_candidates(self, limit: int) -> list[str]:
        """A fixed spread of the catalog: the most shown items of each category, in turn."""
        import polars as pl

        model = self.arms[CHAMPION]
        shown = self.state.snapshot().log.group_by("item_id").agg(n=pl.len())
        items = (model.scorer.items.select("item_id", pl.col("category").fill_null("?"))
                 .join(shown, on="item_id", how="left").with_columns(pl.col("n").fill_null(0))
                 .sort(["n", "item_id"], descending=[True, False])
                 .with_columns(turn=pl.int_range(pl.len()).over("category")).sort(["turn", "category"]))
        return items["item_id"].head(limit).to_list()

    # -- hot swap ---------------------------------------------------------------------------
    def check_aliases(self) -> list[str]:
        """Load a new version for every arm whose registry alias moved; returns the arms swapped.
        The new model is fully loaded before the swap, so requests never wait or fail."""
        swapped = []
        for arm, ref in self.refs.items():
            if not is_registry_ref(ref):
                continue
            try:
                resolved = resolve(ref, self.settings.tracking_uri)  # one registry lookup per check
                if resolved.alias is None or resolved.version == self.arms[arm].info.version:
                    continue
                fresh = RankingModel(resolved, arm)
                snapshot = self.state.refresh()
                if snapshot.complete_until is not None and not fresh.scorer.has_twins:
                    raise ValueError("its feature groups lack live counters, and the live log no longer holds every row")
                fresh.catch_up(snapshot)
            except Exception:  # a registry hiccup must not take the service down: keep serving
                log.exception("checking %s for a new version failed; still serving version %s", ref, self.arms[arm].info.version)
                continue
            log.info("%s: %s moved from version %s to %s; swapped in", arm, ref, self.arms[arm].info.version, fresh.info.version)
            self.arms[arm] = fresh
            swapped.append(arm)
        return swapped

    def start_watching(self) -> None:
        if self._watcher or not any(is_registry_ref(r) for r in self.refs.values()) or self.settings.reload_seconds <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(self.settings.reload_seconds):
                self.check_aliases()

        self._watcher = threading.Thread(target=loop, name="alias-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop watching aliases and write out every served record still queued."""
        self._stop.set()
        self.served.close()


class ServedLog(JsonlLog):
    """served.jsonl: records with numpy columns (serving.ranking.served_record), encoded by
    orjson (~0.2 ms a record of 100 candidates x 42 features against ~2 ms with json; NaN is
    written as null, as the reader expects). Rotated by size (serving.eventlog): readers take
    `read_all`, which reads the rotated files first."""

    @staticmethod
    def encode(rows: list[dict]) -> bytes:  # type: ignore[override]
        import orjson

        options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
        return b"".join(orjson.dumps(r, default=str, option=options) for r in rows)


class ServedWriter:
    """The served-features log written off the request path: a request queues a function that
    makes its records (one JSON line holds every candidate's features: ~2 ms of encoding), a
    thread builds and appends them in batches. No record is lost on a clean stop: `close` (from
    `RankingService.stop`, and at interpreter exit) writes out the queue before it returns; a
    writer `max_pending` batches behind makes requests wait for room rather than drop records."""

    def __init__(self, log: JsonlLog, max_pending: int = 256) -> None:
        self.log = log
        self._queue: queue.Queue[Callable[[], list[dict]] | None] = queue.Queue(max_pending)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, records: Callable[[], list[dict]]) -> None:
        if self._closed:  # after close: write in the caller, as before the writer existed
            self._write([records])
            return
        self._queue.put(records)

    def flush(self) -> None:
        """Return when everything queued so far is in the file."""
        self._queue.join()

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        atexit.unregister(self.close)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while batch[-1] is not None and len(batch) < 64:  # whatever else is waiting: one write
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            makers = [b for b in batch if b is not None]
            try:
                self._write(makers)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is None:
                return

    def _write(self, makers: list[Callable[[], list[dict]]]) -> None:
        try:
            rows = [r for make in makers for r in make()]
            if rows:
                self.log.append(rows, durable=False)
        except Exception:  # the served log is best effort: a failed write must not stop the writer
            log.exception("served-features log: %d request(s) not written to %s", len(makers), self.log.path)


def _utc(ts: datetime) -> datetime:
    """A naive timestamp is UTC, as in the importers."""
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)

