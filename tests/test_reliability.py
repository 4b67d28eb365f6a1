"""Reliability of the live service without a model (issue 20): rate limits (429 + Retry-After),
a full disk (503 + Retry-After, nothing acknowledged lost, recovery by itself), feedback for
unknown items kept aside, and the feedback log compacted into a snapshot that replicas and a
restarted service read, also after a kill -9 at every step of a compaction.

The HTTP tests run the real routes and the real `RankingService.feedback` over a real
`OnlineState`; only ranking is stood in for (it needs a trained model: tests/test_serving.py).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from recsys.core.schemas import EVENTS_SCHEMA
from serving import eventlog
from serving.api_models import RankRequest, RankResponse
from serving.http import build_app
from serving.online import ASIDE_FILE, FEEDBACK_FILE, SNAPSHOT_FILE, OnlineState, read_feedback
from serving.ratelimit import Buckets, Limits, Rate, RateLimiter
from serving.service import RankingService, ServeSettings

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
CATALOG = {"a", "b", "c"}


def base_log() -> pl.DataFrame:
    return pl.DataFrame({"request_id": ["r0", "r0"], "user_id": ["u0", "u0"], "item_id": ["a", "b"],
                         "ts": [T0, T0 + timedelta(seconds=1)], "position": [1, 2], "clicked": [1, 0], "rating": [None, None]},
                        schema=EVENTS_SCHEMA)


def state_in(path: Path, compact_bytes: int = 0) -> OnlineState:
    return OnlineState(base_log(), path, known_item=CATALOG.__contains__, compact_bytes=compact_bytes)


def events(n: int, user: str = "u1", item: str = "a", start: int = 0) -> list[dict]:
    return [{"request_id": f"{user}-{start + k}", "user_id": user, "item_id": item,
             "ts": (T0 + timedelta(minutes=1 + start + k)).isoformat(), "clicked": k % 2} for k in range(n)]


class Clock:
    """A clock the test moves: waits are exact and take no time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- rate limits ---------------------------------------------------------------------------------


def test_a_bucket_admits_its_burst_then_says_exactly_how_long_to_wait() -> None:
    clock = Clock()
    buckets = Buckets(Rate(per_second=2.0, burst_seconds=5.0), clock)  # 10 tokens, 2 back per second
    assert [buckets.take({"k": 1}) for _ in range(10)] == [0.0] * 10
    assert buckets.take({"k": 1}) == pytest.approx(0.5)
    assert buckets.take({"other": 10}) == 0.0  # keys do not share a bucket
    clock.now += 0.5
    assert buckets.take({"k": 1}) == 0.0 and buckets.take({"k": 1}) == pytest.approx(0.5)
    assert buckets.take({"k": 1, "fresh": 1}) > 0 and "fresh" not in buckets._full_at  # all or nothing


def test_buckets_forget_idle_keys_so_many_users_cost_no_memory() -> None:
    clock = Clock()
    buckets = Buckets(Rate(1.0, 1.0), clock, max_keys=100)
    for n in range(100):
        buckets.take({f"user{n}": 1})
    clock.now += 2  # every bucket refilled: the same as never seen
    for n in range(100, 130):
        buckets.take({f"user{n}": 1})
    assert len(buckets) <= 101


@dataclass
class LogOnly:
    """The service's settings, state and real feedback path; ranking stood in for."""

    settings: ServeSettings
    state: OnlineState
    ranked: list[str] = field(default_factory=list)

    def rank(self, req: RankRequest) -> RankResponse:
        self.ranked.append(req.user_id)
        return RankResponse(request_id="r", user_id=req.user_id, arm="champion", model_version=None, ts=self.state.now(),
                            known_user=False, unknown_items=0, items=[])

    def feedback(self, req):
        return RankingService.feedback(self, req)  # type: ignore[arg-type]


def client_with(tmp_path: Path, clock: Clock | None = None, **settings: object) -> tuple[TestClient, LogOnly]:
    chosen = ServeSettings(model="unused", state_dir=str(tmp_path), **settings)  # type: ignore[arg-type]
    service = LogOnly(chosen, state_in(tmp_path))
    limiter = RateLimiter(Limits(chosen.rank_per_key, chosen.rank_per_user, chosen.feedback_per_key,
                                 chosen.feedback_per_user, chosen.burst_seconds), clock or Clock())
    return TestClient(build_app(lambda: service, limiter=limiter), raise_server_exceptions=False), service  # type: ignore[arg-type, return-value]


def test_rank_is_limited_per_user_and_per_key_with_429_and_retry_after(tmp_path: Path) -> None:
    clock = Clock()
    client, service = client_with(tmp_path, clock, rank_per_user=1.0, rank_per_key=3.0, burst_seconds=2.0)
    body = {"user_id": "u1", "item_ids": ["a"]}
    assert [client.post("/v1/rank", json=body).status_code for _ in range(3)] == [200, 200, 429]
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 429 and res.headers["Retry-After"] == "1"
    assert res.json()["detail"][0]["loc"] == ["body", "user_id"] and "u1" in res.json()["message"]
    # other users still get through, until the key's own bucket (6 requests) is spent
    statuses = [client.post("/v1/rank", json={"user_id": f"v{n}", "item_ids": ["a"]}).status_code for n in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    res = client.post("/v1/rank", json={"user_id": "w", "item_ids": ["a"]})
    assert res.status_code == 429 and res.json()["detail"][0]["loc"] == ["header", "x-api-key"]
    # no key configured: the client's address is counted, a made-up key header does not help
    assert client.post("/v1/rank", json={"user_id": "x", "item_ids": ["a"]}, headers={"X-API-Key": "fresh"}).status_code == 429
    clock.now += 2.0
    assert client.post("/v1/rank", json=body).status_code == 200  # refilled: no restart, no wait in real time
    assert len(service.ranked) == 7  # a refused request never reached the ranking


def test_feedback_is_limited_per_user_in_events_and_refused_events_are_not_written(tmp_path: Path) -> None:
    clock = Clock()
    client, service = client_with(tmp_path, clock, feedback_per_user=5.0, burst_seconds=2.0)
    assert client.post("/v1/feedback", json={"events": events(8)}).status_code == 200  # 8 of the 10-event burst
    res = client.post("/v1/feedback", json={"events": events(3, start=8)})
    assert res.status_code == 429 and int(res.headers["Retry-After"]) >= 1
    assert res.json()["detail"][0]["loc"] == ["body", "events"]
    too_many = client.post("/v1/feedback", json={"events": events(11, user="u2")})
    assert too_many.status_code == 422 and "split the call" in too_many.json()["message"]
    assert client.post("/v1/feedback", json={"events": events(2, user="u3")}).status_code == 200  # other users pass
    rows = [json.loads(line) for line in (tmp_path / FEEDBACK_FILE).read_text().splitlines()]
    assert [r["request_id"] for r in rows] == [f"u1-{k}" for k in range(8)] + ["u3-0", "u3-1"]
    clock.now += 1.0
    assert client.post("/v1/feedback", json={"events": events(3, start=8)}).status_code == 200


def test_feedback_for_unknown_items_is_counted_and_kept_aside(tmp_path: Path) -> None:
    client, service = client_with(tmp_path)
    mixed = events(2, item="a") + events(3, item="made-up", start=2)
    res = client.post("/v1/feedback", json={"events": mixed})
    assert res.status_code == 200 and (res.json()["accepted"], res.json()["unknown_items"]) == (2, 3)
    log = service.state.refresh().log
    assert "made-up" not in log["item_id"].to_list() and log.height == 2 + 2
    aside = [json.loads(line) for line in (tmp_path / ASIDE_FILE).read_text().splitlines()]
    assert [r["item_id"] for r in aside] == ["made-up"] * 3 and all(r["arm"] == "champion" for r in aside)


# --- a full disk ---------------------------------------------------------------------------------


class Disk:
    """os.write for serving.eventlog with `free` bytes left: a write past it is cut short, then
    ENOSPC, as a real full filesystem does."""

    def __init__(self, free: int) -> None:
        self.free, self.real = free, os.write

    def __call__(self, fd: int, data: bytes) -> int:
        if self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real(fd, bytes(data[: self.free]))
        self.free -= n
        return n


def test_a_full_disk_is_503_with_retry_after_loses_nothing_acknowledged_and_recovers(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client, service = client_with(tmp_path, storage_retry_seconds=7)
    assert client.post("/v1/feedback", json={"events": events(3)}).status_code == 200
    acked_size = (tmp_path / FEEDBACK_FILE).stat().st_size
    disk = Disk(free=150)  # room for about one event: the next write of three is cut halfway
    monkeypatch.setattr(eventlog.os, "write", disk)
    res = client.post("/v1/feedback", json={"events": events(3, start=3)})
    assert res.status_code == 503 and res.headers["Retry-After"] == "7" and "storage full" in res.json()["message"]
    assert (tmp_path / FEEDBACK_FILE).stat().st_size == acked_size  # the half-written block was cut back
    assert client.post("/v1/rank", json={"user_id": "u1", "item_ids": ["a"]}).status_code == 200  # ranking goes on
    disk.free = 10**9  # space is back: the same call now succeeds, no restart
    assert client.post("/v1/feedback", json={"events": events(3, start=3)}).status_code == 200
    rows = [json.loads(line) for line in (tmp_path / FEEDBACK_FILE).read_text().splitlines()]
    assert [r["request_id"] for r in rows] == [f"u1-{k}" for k in range(6)]  # each once, none torn
    assert service.state.refresh().log.height == 2 + 6


def test_a_full_disk_drops_best_effort_rows_with_a_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = eventlog.JsonlLog(tmp_path / "served.jsonl")
    monkeypatch.setattr(eventlog.os, "write", Disk(free=0))
    assert log.append([{"a": 1}, {"a": 2}], durable=False) == 0 and log.dropped == 2
    with pytest.raises(eventlog.StorageFull, match="nothing of this write was kept"):
        log.append([{"a": 1}], durable=True)


# --- compaction ----------------------------------------------------------------------------------


def ids(state: OnlineState) -> list[str]:
    return state.refresh().log["request_id"].to_list()[2:]  # after the two base events


def test_compaction_bounds_the_file_and_replicas_and_restarts_see_every_event_once(tmp_path: Path) -> None:
    writer, reader = state_in(tmp_path, compact_bytes=2_000), state_in(tmp_path, compact_bytes=2_000)
    sent: list[str] = []
    for n in range(0, 120, 6):
        batch = events(6, start=n)
        writer.append(batch)
        sent += [e["request_id"] for e in batch]
        if n % 30 == 0:
            assert ids(reader) == sent  # a replica that looks now and then misses nothing, counts nothing twice
    assert writer.compactions >= 5 and (tmp_path / FEEDBACK_FILE).stat().st_size < 2_000 + 1_000
    assert ids(reader) == sent and ids(writer) == sent
    assert ids(state_in(tmp_path)) == sent  # a restart reads snapshot + current file
    assert [r["request_id"] for r in read_feedback(tmp_path)] == sent  # what the A/B report reads
    assert pl.read_parquet(tmp_path / SNAPSHOT_FILE).height + len(eventlog.JsonlLog(tmp_path / FEEDBACK_FILE).read_all()) == 120


def test_the_frame_lets_feedback_go_past_live_rows_and_says_what_it_still_holds(tmp_path: Path) -> None:
    state = OnlineState(base_log(), tmp_path, known_item=CATALOG.__contains__, live_rows=5)
    state.append(events(4))  # the training log's 2 rows + 4
    snap = state.snapshot()
    assert snap.since(0).height == 6 and snap.since(3).height == 3 and snap.complete_until is None
    state.append(events(3, start=4))  # 7 feedback rows > 5: let go
    snap = state.snapshot()
    assert snap.log.height == 2 and snap.taken == 9 and snap.complete_until == T0 + timedelta(minutes=1)
    assert snap.totals["_cum_shown"][-1] == 2  # the totals are the frame's
    assert snap.since(9).height == 0 and snap.since(6) is None and snap.since(1) is None
    state.append(events(2, start=7))
    snap = state.snapshot()
    assert snap.since(9)["request_id"].to_list() == ["u1-7", "u1-8"] and snap.since(8) is None
    every = [r for block in snap.every_row() for r in block["request_id"].to_list()]
    assert every == ["r0", "r0"] + [f"u1-{k}" for k in range(9)]  # read back from disk, in order
    assert snap.point_in_time_refusal(T0 + timedelta(minutes=1)) is None  # nothing before it was let go
    assert "leave context.ts out" in (snap.point_in_time_refusal(T0 + timedelta(minutes=2)) or "")
    assert snap.point_in_time_refusal(snap.last_ts + timedelta(seconds=1)) is None  # later than every event: the counters
    restarted = OnlineState(base_log(), tmp_path, known_item=CATALOG.__contains__, live_rows=5).snapshot()
    assert restarted.taken == 11 and restarted.log.height == 2 and restarted.complete_until == T0 + timedelta(minutes=1)


def test_a_compaction_that_hits_a_full_disk_fails_no_write_and_is_retried(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    state = state_in(tmp_path, compact_bytes=1_000)

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", full)  # the snapshot is streamed
    state.append(events(10))  # past compact_bytes: the compaction fails, the append does not
    assert state.compactions == 0 and not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()
    state.append(events(2, start=10))
    assert state.compactions == 1 and ids(state_in(tmp_path)) == [f"u1-{k}" for k in range(12)]


CHILD = """
import os, signal, sys
from serving import online
from tests.test_reliability import events, state_in

kill_at = int(sys.argv[2])  # kill -9 right before (odd) or after (even) the n-th file swap of a compaction
calls = {"n": 0}
real = os.replace
def replace(src, dst):
    calls["n"] += 1
    if calls["n"] * 2 - 1 == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
    if calls["n"] * 2 == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
online.os.replace = replace
state = state_in(sys.argv[1], compact_bytes=1_500)
for n in range(0, 10_000, 4):
    state.append(events(4, start=n))
    print(",".join(f"u1-{k}" for k in range(n, n + 4)), flush=True)  # acknowledged
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 2, 4, 7])
def test_kill_9_at_any_step_of_a_compaction_loses_no_acknowledged_event(tmp_path: Path, kill_at: int) -> None:
    """1: before the snapshot is renamed in; 2: after it, before the new file is; 4: after both;
    7: in the second compaction. Then a restart, and more writes and compactions."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(kill_at)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    acked = [i for line in proc.stdout.split() for i in line.split(",")]
    assert acked, "the child was killed before acknowledging anything"
    restarted = state_in(tmp_path, compact_bytes=1_500)
    got = ids(restarted)
    assert got[: len(acked)] == acked and len(got) <= len(acked) + 4  # at most the one unanswered call extra
    restarted.append(events(40, start=20_000))  # writes and compactions go on from the recovered state
    assert ids(state_in(tmp_path)) == got + [f"u1-{k}" for k in range(20_000, 20_040)]


# --- two trainings on one MLflow store -----------------------------------------------------------

TRACK = """
import sys
import lightgbm as lgb, mlflow, numpy as np
from recsys.pipeline.tracking import open_experiment, store_lock, update_aliases
uri = sys.argv[1]
mlflow.set_tracking_uri(uri)
with store_lock(uri):  # what log_run holds: every MLflow write of one training
    exp = open_experiment("both", uri)
    x = np.random.default_rng(0).random((40, 3))
    booster = lgb.train({"verbose": -1, "num_leaves": 3}, lgb.Dataset(x, x[:, 0]), 2)
    with mlflow.start_run(experiment_id=exp):
        mlflow.log_metrics({f"m{k}": k for k in range(50)})
        info = mlflow.lightgbm.log_model(booster, name="ranker", pip_requirements=["lightgbm"], registered_model_name="both")
    update_aliases("both", str(info.registered_model_version), float(sys.argv[2]), "same-data")
"""


@pytest.mark.slow
def test_two_trainings_logging_at_once_to_a_new_sqlite_store_both_finish(tmp_path: Path) -> None:
    """Unlocked, the second process died creating the new store's tables ("duplicate column name:
    step", measured); with the lock both register a version and exactly one ends as champion."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", TRACK, uri, score], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for score in ("0.5", "0.6")]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for e in errors]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    versions = client.search_model_versions("name='both'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert client.get_model_version_by_alias("both", "champion").tags["test_ndcg_at_10"] == "0.600000"


def test_a_store_held_too_long_is_one_clear_error(tmp_path: Path) -> None:
    from filelock import FileLock

    from recsys.pipeline.tracking import StoreBusy, store_lock

    db = tmp_path / "mlflow.db"
    with FileLock(f"{db}.lock"), pytest.raises(StoreBusy, match=r"MLflow store .*mlflow.db is busy: .*retry when it has finished"):
        with store_lock(f"sqlite:///{db}", wait_seconds=0.2):
            pass


def test_limits_are_configurable_from_a_serve_config() -> None:
    """`serve run serving.deploy:app_builder rank_per_user=5 ...` and Serve config `args` pass strings."""
    from serving.deploy import builder_settings

    settings, _ = builder_settings({"rank_per_user": "5", "feedback_per_key": "0", "burst_seconds": "2.5", "compact_bytes": "1000"})
    assert (settings.rank_per_user, settings.feedback_per_key, settings.burst_seconds, settings.compact_bytes) == (5.0, 0.0, 2.5, 1000)
    assert settings.feedback_per_user == ServeSettings().feedback_per_user  # unset: the default


# --- served.jsonl rotation -----------------------------------------------------------------------

import threading  # noqa: E402


def test_rotation_keeps_every_line_of_concurrent_replicas_in_exactly_one_file(tmp_path: Path) -> None:
    """Two replicas (two logs on one path) with two threads each append numbered rows to a log
    that rotates every ~1 KB: the files' lines together are exactly the rows written."""
    path = tmp_path / "served.jsonl"
    replicas = [eventlog.JsonlLog(path, rotate_bytes=1_000, keep=10_000) for _ in range(2)]

    def write(log: eventlog.JsonlLog, who: int) -> None:
        for n in range(150):
            log.append([{"who": who, "n": n, "pad": "x" * 40}] * (1 + n % 3), durable=False)

    threads = [threading.Thread(target=write, args=(replicas[k % 2], k)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    written = sorted((who, n) for who in range(4) for n in range(150) for _ in range(1 + n % 3))
    rotated = eventlog.rotated_files(path)
    assert sum(r.rotations for r in replicas) == len(rotated) > 10
    by_file = [[json.loads(line) for line in p.read_text().splitlines()] for p in [*rotated, path]]
    assert sorted((r["who"], r["n"]) for rows in by_file for r in rows) == written  # none lost, none twice
    assert all(p.stat().st_size < 1_000 + 3 * 100 for p in rotated)  # rotated right after the write that filled it
    assert sorted((r["who"], r["n"]) for r in eventlog.JsonlLog(path).read_all()) == written
    for who in range(4):  # each writer's rows in its order across the files
        assert [r["n"] for r in eventlog.JsonlLog(path).read_all() if r["who"] == who] == [n for w, n in written if w == who]


def test_rotation_keeps_the_newest_files_and_a_reader_during_rotations_sees_a_prefix(tmp_path: Path) -> None:
    path = tmp_path / "served.jsonl"
    log = eventlog.JsonlLog(path, rotate_bytes=300, keep=1_000)
    done = threading.Event()

    def write() -> None:
        for n in range(400):
            log.append([{"n": n}], durable=False)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.wait(0.001) and writer.is_alive():  # read while it writes and rotates
        rows = [r["n"] for r in eventlog.JsonlLog(path).read_all()]
        assert rows == list(range(len(rows))), "a line hidden or repeated by a rotation"
    writer.join(timeout=60)
    assert [r["n"] for r in eventlog.JsonlLog(path).read_all()] == list(range(400)) and log.rotations > 10
    small = eventlog.JsonlLog(tmp_path / "small.jsonl", rotate_bytes=100, keep=2)
    for n in range(100):
        small.append([{"n": n}], durable=False)
    assert len(eventlog.rotated_files(small.path)) == 2 and small.rotations > 5  # older ones deleted
    kept = [r["n"] for r in small.read_all()]
    assert kept == list(range(100 - len(kept), 100))  # the newest rows, in order, none missing between


def test_the_served_writer_rotates_and_the_report_reads_every_file(tmp_path: Path) -> None:
    from serving.report import arm_ctr, served_training_rows
    from serving.service import SERVED_FILE, ServedLog, ServedWriter

    state_in(tmp_path).append([{**e, "arm": "champion"} for e in events(4)])
    writer = ServedWriter(ServedLog(tmp_path / SERVED_FILE, rotate_bytes=2_000, keep=100))
    for n in range(60):
        record = {"request_id": f"u1-{n}", "arm": "champion", "model_version": "1", "ts": T0.isoformat(), "user_id": "u1",
                  "context": {}, "item_ids": ["a", "b"], "scores": [0.5, 0.25], "shown": ["a"],
                  "features": {"f": [1.0, float(n)]}}
        writer.put(lambda record=record: [record])
        writer.flush()  # one write each (the writer batches whatever is queued)
    writer.close()
    assert len(eventlog.rotated_files(tmp_path / SERVED_FILE)) > 3
    rows = served_training_rows(tmp_path)
    assert rows.height == 120 and rows["feature.f"].to_list()[1::2] == [float(n) for n in range(60)]
    assert rows.filter(pl.col("clicked").is_not_null())["request_id"].unique().sort().to_list() == [f"u1-{k}" for k in range(4)]
    table, _ = arm_ctr(tmp_path)
    assert table["requests"].to_list() == [60]


def test_served_rotation_is_configurable_and_checked() -> None:
    from serving.deploy import builder_settings

    settings, _ = builder_settings({"served_rotate_bytes": "1000", "served_keep": "3"})
    assert (settings.served_rotate_bytes, settings.served_keep) == (1000, 3)
    assert ServeSettings().served_rotate_bytes == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="served_keep=0"):
        ServeSettings(served_keep=0)


def test_the_service_folds_each_arms_counters_past_its_longest_window() -> None:
    from types import SimpleNamespace

    from features.behavioural import WEEK_US
    from features.pointintime import global_totals
    from serving.online import LogSnapshot
    from serving.ranking import RankingModel

    items = pl.DataFrame({"item_id": ["a"], "category": ["c"], "created_at": [None]},
                         schema={"item_id": pl.String, "category": pl.String, "created_at": pl.Datetime("us", "UTC")})
    log = pl.DataFrame({"request_id": [f"r{d}" for d in range(30)], "user_id": ["u"] * 30, "item_id": ["a"] * 30,
                        "ts": [T0 + timedelta(days=d) for d in range(30)], "position": [None] * 30, "clicked": [1] * 30,
                        "rating": [None] * 30}, schema=EVENTS_SCHEMA)
    model = SimpleNamespace(scorer=SimpleNamespace(items=items, artefacts={"time_scale": {"recent_us": 5 * 86_400_000_000}}), _live=None)
    state = RankingModel.catch_up(model, LogSnapshot(log, global_totals(log), log["ts"].max(), 0, base_rows=log.height))
    assert state.horizon == 10 * 86_400_000_000 > WEEK_US  # twice item_trend's recent window
    assert len(state.items["a"].trail) == 10 and state.items["a"].trail.counts(1 << 62) == (30.0, 30.0)
