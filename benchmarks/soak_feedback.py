"""Soak: a long stream of feedback through the service's own feedback path, with /v1/rank probes.

    nice -n 10 python benchmarks/soak_feedback.py --events 1000000 [--workdir bench_out/soak]

A small synthetic shop is trained once (behavioural features, no tracking) unless --model names a
run. The events then go in-process through `RankingService.feedback` (what POST /v1/feedback
calls after the rate limiter; HTTP parsing is left out so the soak measures the state, not the
JSON) in calls of --batch events, durable and compacted as in production. The stream spans
--hours of event time; 1 % of events name an item that is not in the catalog (kept aside). Every
--probe-every events, --probes /v1/rank calls (20 candidates each, via `RankingService.rank`)
are timed and the process RSS is read; the first and last lines are the start and the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]


def trained_run(workdir: Path) -> Path:
    """A run directory of a small synthetic shop (made once, reused)."""
    from recsys.data.synth import SynthConfig, synth
    from recsys.pipeline.configure import load_config
    from recsys.pipeline.train import train

    run_dir = workdir / "run"
    if not (run_dir / "metrics.json").exists():
        shop = workdir / "shop"
        if not (shop / "manifest.json").exists():
            synth(SynthConfig(users=800, items=300, days=14, seed=5), shop)
        train(load_config(ROOT / "experiments" / "behavioural.toml", ["ranker.task=impressions"]), shop, run_dir, track=False)
    return run_dir


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def probe(service: object, rng: np.random.Generator, users: list[str], items: list[str], n: int) -> np.ndarray:
    from serving.api_models import RankRequest

    took = []
    for _ in range(n):
        req = RankRequest(user_id=str(rng.choice(users)), item_ids=[str(i) for i in rng.choice(items, 20, replace=False)])
        t = time.perf_counter()
        service.rank(req)  # type: ignore[attr-defined]
        took.append(time.perf_counter() - t)
    return np.asarray(took) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=200, help="events per feedback call")
    parser.add_argument("--hours", type=float, default=24.0, help="event time the stream spans")
    parser.add_argument("--probe-every", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--compact-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--model", type=Path, default=None, help="a run directory (default: train a small shop)")
    parser.add_argument("--workdir", type=Path, default=Path("bench_out/soak"))
    parser.add_argument("--tracemalloc", action="store_true", help="print the top allocation sites of the stream at the end")
    args = parser.parse_args()

    from ray import init as ray_init

    ray_init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    run_dir = args.model or trained_run(args.workdir)
    import shutil

    from serving.api_models import FeedbackRequest
    from serving.service import RankingService, ServeSettings

    state_dir = args.workdir / "state"
    shutil.rmtree(state_dir, ignore_errors=True)
    service = RankingService(ServeSettings(model=str(run_dir), state_dir=str(state_dir), reload_seconds=0,
                                           compact_bytes=args.compact_bytes))
    snapshot = service.state.snapshot()
    users = snapshot.log["user_id"].unique().sort().to_list()
    items = sorted(service.arms["champion"].catalog)
    start = service.state.now()
    rng = np.random.default_rng(0)
    print(f"base log {snapshot.log.height:,} events, {len(users):,} users, {len(items):,} items; run {run_dir}")
    print(f"{'events':>10} {'rss_mb':>8} {'rank_p50_ms':>11} {'rank_p99_ms':>11} {'feedback_ev/s':>13} "
          f"{'file_mb':>7} {'snapshot_mb':>11} {'aside':>7} {'compactions':>11}")

    def sizes() -> str:
        """What the live state holds, by part (polars' estimate for the frames), to see where memory goes."""
        snap = service.state.snapshot()
        live = service.arms["champion"]._live
        held = live.size() if live else {}
        return (f"log {snap.log.height:,} rows {snap.log.estimated_size() / 1e6:.0f} MB, totals {snap.totals.height:,} rows "
                f"{snap.totals.estimated_size() / 1e6:.0f} MB, counters {held.get('bytes', 0) / 1e6:.0f} MB: "
                f"{held.get('item_moments', 0):,} item moments, {held.get('pairs', 0):,} user pairs, "
                f"{held.get('kept_clicks', 0):,} clicks kept for histories, horizon "
                f"{(live.horizon or 0) / 86_400e6 if live else 0:.1f} days")

    def report(done: int, rate: float) -> None:
        ms = probe(service, rng, users, items, args.probes)
        feedback = state_dir / "feedback.jsonl"
        snap = state_dir / "feedback-snapshot.parquet"
        aside = state_dir / "feedback-unknown-items.jsonl"
        kept_aside = aside.read_bytes().count(b"\n") if aside.exists() else 0
        print(f"{done:>10,} {rss_mb():>8.0f} {np.percentile(ms, 50):>11.1f} {np.percentile(ms, 99):>11.1f} {rate:>13,.0f} "
              f"{feedback.stat().st_size / 1e6:>7.1f} {(snap.stat().st_size / 1e6 if snap.exists() else 0):>11.1f} "
              f"{kept_aside:>7,} {service.state.compactions:>11}", flush=True)

    report(0, 0.0)
    print("live state at the start:", sizes())
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(3)
        traced = tracemalloc.take_snapshot()
    done, busy = 0, 0.0
    step = timedelta(hours=args.hours) / args.events
    while done < args.events:
        n = min(args.batch, args.events - done)
        who = rng.choice(users, n)
        what = rng.choice(items, n)
        unknown = rng.random(n) < 0.01
        clicked = rng.random(n) < 0.05
        ts = (start + step * done).isoformat()  # one moment per call: a call is one page of impressions
        events = [{"user_id": str(u), "item_id": f"ghost-{w}" if x else str(w), "clicked": int(c), "ts": ts}
                  for u, w, x, c in zip(who, what, unknown, clicked)]
        req = FeedbackRequest.model_validate({"events": events})
        t = time.perf_counter()
        service.feedback(req)
        busy += time.perf_counter() - t
        done += n
        if done % args.probe_every == 0 or done == args.events:
            report(done, done / busy)
    print("live state at the end:", sizes())
    if args.tracemalloc:
        grown = tracemalloc.take_snapshot().compare_to(traced, "lineno")
        print("grown most (Python and numpy allocations):")
        for stat in grown[:8]:
            print("  ", stat)


if __name__ == "__main__":
    main()
