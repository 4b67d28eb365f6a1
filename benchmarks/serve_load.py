"""Sustained load and replica faults against the Ray Serve app (traffic to 127.0.0.1 only).

    # the highest constant rate with p99 <= 100 ms, then 5 minutes at it, replica memory sampled
    python benchmarks/serve_load.py --model demo/runs/synthetic --find-rate 10 15 20 25 30 --duration 300
    # kill one of two replicas 20 s into a 60 s run: error rate and recovery time
    python benchmarks/serve_load.py --model demo/runs/synthetic --rate 15 --duration 60 --kill-at 20
    # two replicas on a local two-node cluster (ray.cluster_utils.Cluster, one CPU per node)
    python benchmarks/serve_load.py --model demo/runs/synthetic --two-nodes --rate 10 --duration 60

Open loop: requests are sent on a fixed schedule whatever the answers, so a slow service shows up
as latency, not as a lower offered rate. Each request ranks 100 catalog candidates for a user.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from serving.bench import make_requests
from serving.deploy import ServerOptions, start, stop
from serving.service import RankingService, ServeSettings

log = logging.getLogger("serve_load")


def replica_pids() -> list[int]:
    """Ray titles a replica's process `ray::ServeReplica:<app>:<deployment>`."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        if any("ServeReplica:recsys:ranker" in part for part in proc.info["cmdline"] or []):
            pids.append(proc.pid)
    return sorted(pids)


def replica_nodes() -> dict[str, int]:
    """How many live ranker replicas each Ray node holds (empty without Ray's dashboard, which
    serves the state API: the local Ray of `recsys serve` starts without one)."""
    from ray.util.state import list_actors
    from ray.util.state.exception import ServerUnavailable

    nodes: dict[str, int] = {}
    try:
        actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    except ServerUnavailable:
        return nodes
    for actor in actors:
        if "ServeReplica" in (actor.class_name or ""):
            nodes[actor.node_id[:8]] = nodes.get(actor.node_id[:8], 0) + 1
    return nodes


def rss_mb(pids: list[int]) -> float:
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


async def load(url: str, bodies: list[dict], rate: float, duration: float, kill_at: float | None) -> dict:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    results: list[tuple[float, float, int]] = []  # (sent at, latency s, status; 0 = transport error)
    memory: list[tuple[float, float, int]] = []
    killed: dict = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def one(body: dict, sent: float) -> None:
            t = time.perf_counter()
            try:
                status = (await client.post("/v1/rank", json=body)).status_code
            except httpx.HTTPError:
                status = 0
            results.append((sent, time.perf_counter() - t, status))

        async def sample() -> None:
            while True:
                pids = replica_pids()
                memory.append((time.perf_counter() - start_at, rss_mb(pids), len(pids)))
                await asyncio.sleep(5)

        start_at = time.perf_counter()
        sampler = asyncio.create_task(sample())
        tasks = []
        n = 0
        while (now := time.perf_counter() - start_at) < duration:
            if kill_at is not None and not killed and now >= kill_at:
                victim = replica_pids()[0]
                os.kill(victim, signal.SIGKILL)
                killed = {"pid": victim, "at": now}
            due = n / rate
            if now < due:
                await asyncio.sleep(due - now)
                continue
            tasks.append(asyncio.create_task(one(bodies[n % len(bodies)], due)))
            n += 1
        await asyncio.gather(*tasks)
        sampler.cancel()
    return summarise(results, memory, killed, rate, duration)


def summarise(results: list, memory: list, killed: dict, rate: float, duration: float) -> dict:
    ok = np.array([lat for _, lat, s in results if s == 200]) * 1000
    errors = [(sent, s) for sent, _, s in results if s != 200]
    out = {
        "rate": rate, "duration_s": duration, "requests": len(results), "errors": len(errors),
        "error_rate": len(errors) / max(len(results), 1),
        "p50_ms": float(np.percentile(ok, 50)) if len(ok) else None,
        "p95_ms": float(np.percentile(ok, 95)) if len(ok) else None,
        "p99_ms": float(np.percentile(ok, 99)) if len(ok) else None,
        "memory_mb": [(round(t, 1), round(m, 1), n) for t, m, n in memory],
    }
    if memory:
        third = max(len(memory) // 3, 1)
        out["memory_first_third_mb"] = float(np.mean([m for _, m, _ in memory[:third]]))
        out["memory_last_third_mb"] = float(np.mean([m for _, m, _ in memory[-third:]]))
    if killed:
        after = [sent for sent, _ in errors if sent >= killed["at"]]
        back = [t for t, _, n in memory if t > killed["at"] and n >= 2]
        out["kill"] = {
            "at_s": round(killed["at"], 2), "errors_after_kill": len(after),
            "last_error_after_kill_s": round(max(after) - killed["at"], 2) if after else 0.0,
            "replicas_back_after_s": round(back[0] - killed["at"], 1) if back else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument(
        "--find-rate", type=float, nargs="*", help="try these rates for --probe-seconds each; keep the highest with p99 <= --p99-ms"
    )
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument("--p99-ms", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--kill-at", type=float, default=None, help="SIGKILL one replica this many seconds in")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8031)
    parser.add_argument("--two-nodes", action="store_true", help="a local two-node cluster, one replica per node")
    parser.add_argument("--out", type=Path, default=Path("bench_out/serve_load.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cluster = None
    if args.two_nodes:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        os.environ["RAY_ADDRESS"] = cluster.address  # what a user of an existing cluster sets

    state = Path(tempfile.mkdtemp(prefix="recsys-load-"))
    local = RankingService(ServeSettings(model=args.model, state_dir=str(state / "local"), reload_seconds=0))
    bodies = make_requests(local, 500, 100, seed=1)
    url = start(ServeSettings(model=args.model, state_dir=str(state / "serve"), reload_seconds=0),
                ServerOptions(port=args.port, replicas=args.replicas, replica_cpus=1 if args.two_nodes else 0, access_log=False))
    report: dict = {"model": args.model, "replicas": args.replicas, "probes": [], "replica_nodes": replica_nodes()}
    log.info("replicas per node: %s", report["replica_nodes"])
    try:
        rate = args.rate
        if args.find_rate:
            for candidate in args.find_rate:
                probe = asyncio.run(load(url, bodies, candidate, args.probe_seconds, None))
                log.info("probe %.0f req/s: p99 %.1f ms, errors %d", candidate, probe["p99_ms"] or -1, probe["errors"])
                report["probes"].append({k: probe[k] for k in ("rate", "p50_ms", "p99_ms", "errors")})
                if probe["errors"] or (probe["p99_ms"] or 1e9) > args.p99_ms:
                    break
                rate = candidate
        log.info("running %.0f s at %.1f req/s", args.duration, rate)
        report["run"] = asyncio.run(load(url, bodies, rate, args.duration, args.kill_at))
    finally:
        stop()
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    run = report["run"]
    print(json.dumps({k: v for k, v in run.items() if k != "memory_mb"}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
