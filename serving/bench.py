"""`recsys bench serve`: /v1/rank latency over HTTP at several concurrencies, next to the
in-process floor (the same RankingService called directly) and, with --floor, the same levels
against a Serve app that only returns a fixed response (`start_floor`), so the serving overhead
shows and what of it is Ray Serve's own.

Requests are made up from the run itself: active and unknown users, candidates drawn from the
catalog with a fixed seed. Traffic goes to 127.0.0.1 only unless --url says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving.api_models import RankRequest
from serving.service import RankingService

if TYPE_CHECKING:
    from serving.deploy import ServerOptions


@dataclass(frozen=True)
class LevelResult:
    mode: str
    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float


def make_requests(service: RankingService, n: int, candidates: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    snapshot = service.state.snapshot()
    users = snapshot.log["user_id"].unique().sort().to_list()
    items = sorted(service.arms["champion"].catalog)
    k = min(candidates, len(items))
    out = []
    for r in range(n):
        user = rng.choice(users) if r % 10 else f"new-user-{r}"  # one in ten is a cold user
        out.append({"user_id": user, "item_ids": rng.sample(items, k), "top_k": 10})
    return out


def _summary(mode: str, concurrency: int, latencies: list[float], errors: int, seconds: float) -> LevelResult:
    ms = np.asarray(latencies) * 1000.0
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99)) if len(ms) else (float("nan"),) * 3
    return LevelResult(mode, concurrency, len(latencies) + errors, errors, p50, p95, p99, len(latencies) / seconds)


def in_process(service: RankingService, requests: list[dict]) -> LevelResult:
    parsed = [RankRequest(**r) for r in requests]
    service.rank(parsed[0])  # warm-up: lazy loads
    latencies = []
    start = time.perf_counter()
    for req in parsed:
        t = time.perf_counter()
        service.rank(req)
        latencies.append(time.perf_counter() - t)
    return _summary("in-process", 1, latencies, 0, time.perf_counter() - start)


async def _http_level(url: str, requests: list[dict], concurrency: int) -> LevelResult:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    latencies: list[float] = []
    errors = 0

    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=concurrency)) as client:
        await client.post("/v1/rank", json=requests[0])  # warm-up

        async def worker() -> None:
            nonlocal errors
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                try:
                    res = await client.post("/v1/rank", json=body)
                    ok = res.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return _summary("http", concurrency, latencies, errors, seconds)


def http_levels(url: str, requests: list[dict], concurrencies: list[int]) -> list[LevelResult]:
    return [asyncio.run(_http_level(url, requests, c)) for c in concurrencies]



@dataclass(frozen=True)
class StageResult:
    stage: str
    calls: int  # requests in which the stage ran
    p50_ms: float
    p99_ms: float
    mean_ms: float


def profile(service: RankingService, requests: list[dict]) -> list[StageResult]:
    """Where one in-process request's time goes: body parsing (what FastAPI does with the JSON
    bytes), each marked stage of `RankingService.rank` (recsys.core.stopwatch), and the response's
    validation and JSON encoding (FastAPI's fast path: a pydantic TypeAdapter to bytes). Stages
    nest: `features` holds `features/<group>`, `explain` holds `explain/contributions`;
    `unmarked` is the time between the top-level marks, `total` all of it."""
    from pydantic import TypeAdapter

    from recsys.core.stopwatch import recording, stage
    from serving.api_models import RankResponse

    response = TypeAdapter(RankResponse)
    bodies = [json.dumps(r).encode() for r in requests]
    service.rank(RankRequest.model_validate_json(bodies[0]))  # warm-up: lazy loads
    runs: list[dict[str, float]] = []
    for body in bodies:
        t = time.perf_counter()
        with recording() as times:
            with stage("parse"):
                req = RankRequest.model_validate_json(body)
            ranked = service.rank(req)
            with stage("json"):
                response.dump_json(response.validate_python(ranked))
        total = time.perf_counter() - t
        times["unmarked"] = total - sum(v for k, v in times.items() if "/" not in k)  # work between the marks
        times["total"] = total
        runs.append(times)
    order = list(dict.fromkeys(name for times in runs for name in times))
    out = []
    for name in order:
        ms = np.array([times.get(name, 0.0) for times in runs]) * 1000.0
        out.append(StageResult(name, sum(1 for times in runs if name in times), float(np.percentile(ms, 50)),
                               float(np.percentile(ms, 99)), float(ms.mean())))
    return out


def print_profile(results: list[StageResult], title: str) -> None:
    """The profile as a table: a nested stage is indented under its parent."""
    print(title)
    print(f"{'stage':<34}{'runs':>6}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for r in results:
        name = "  " * r.stage.count("/") + r.stage.rsplit("/", 1)[-1]
        print(f"{name:<34}{r.calls:>6}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{r.mean_ms:>9.3f}")


FLOOR_APP = "recsys-floor"


def start_floor(response: bytes, options: ServerOptions) -> str:
    """A Ray Serve app shaped like the service (`serving.deploy.start`: the same replicas, CPUs,
    port and environment, a FastAPI ingress whose sync /v1/rank parses the JSON body) that answers
    every call with one fixed response body: what Serve and FastAPI cost with no ranking at all.
    `http` minus `http floor` at a concurrency is the ranking's own share over HTTP. It answers
    under /floor, so it can run beside the service; returns its base URL; `stop_floor` removes it."""
    from fastapi import FastAPI
    from fastapi.responses import Response
    from ray import serve

    from serving.deploy import REPLICA_ENV, start_serve

    app = FastAPI()

    @app.post("/v1/rank")
    def rank(body: dict) -> Response:
        return Response(response, media_type="application/json")

    @serve.deployment(name="floor", max_ongoing_requests=32)
    @serve.ingress(app)
    class Floor:
        pass

    start_serve(options)
    serve.run(Floor.options(num_replicas=options.replicas, ray_actor_options={
        "num_cpus": options.replica_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
        logging_config={"enable_access_log": options.access_log}).bind(), name=FLOOR_APP, route_prefix="/floor")
    return f"http://{options.host}:{options.port}/floor"


def stop_floor() -> None:
    from ray import serve

    serve.delete(FLOOR_APP)
