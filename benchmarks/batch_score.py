"""Batch scoring at scale: `recsys score` over N candidate pairs with 1 and 2 Ray Data workers.

    # 10M pairs, 1 then 2 workers, on a local Ray started here
    python benchmarks/batch_score.py --model demo/runs/synthetic --pairs 10000000 --workers 1 2
    # the same on a local two-node cluster (ray.cluster_utils.Cluster, one CPU per node)
    python benchmarks/batch_score.py --model demo/runs/synthetic --pairs 2000000 --workers 2 --two-nodes

Candidates are random (user, item) pairs of the run's users (one in ten unknown) and catalog
items. Prints, per worker count: wall seconds, pairs/s, the speed-up over the first count, the
peak resident memory of the whole process tree (driver + Ray) and of the largest scoring
worker, sampled every 0.2 s. Results also go to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def make_candidates(run_dir: Path, pairs: int, path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    users = pl.read_parquet(run_dir / "state" / "log.parquet")["user_id"].unique().sort().to_numpy()
    items = pl.read_parquet(run_dir / "state" / "items.parquet")["item_id"].to_numpy()
    cold = np.array([f"cold-{n}" for n in range(max(len(users) // 9, 1))])
    pool = np.concatenate([users, cold])
    pl.DataFrame({"user_id": pool[rng.integers(0, len(pool), pairs)], "item_id": items[rng.integers(0, len(items), pairs)]}).write_parquet(
        path
    )


class PeakMemory:
    """Peak RSS (bytes) of this process and all its descendants, and of the largest one that
    runs scoring (Ray names it after the map_batches actor)."""

    def __init__(self, every: float = 0.2) -> None:
        import psutil

        self.root, self.every = psutil.Process(), every
        self.total = self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.every):
            total = worker = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                    total += rss
                    if "ScoreBatch" in " ".join(proc.cmdline()) or "MapBatches" in proc.name():
                        worker = max(worker, rss)
                except psutil.Error:
                    continue
            self.total, self.worker = max(self.total, total), max(self.worker, worker)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained run directory")
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--two-nodes", action="store_true", help="run on a local two-node cluster (one CPU per node)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/batch_score.json"))
    args = parser.parse_args()

    import ray

    from serving.batch import score_file

    cluster = None
    if args.two_nodes:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
    else:
        ray.init(log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    print(f"Ray: {len(nodes)} node(s), {ray.cluster_resources().get('CPU', 0):.0f} CPU(s)")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        candidates = Path(tmp) / "candidates.parquet"
        started = time.perf_counter()
        make_candidates(args.model, args.pairs, candidates)
        print(f"{args.pairs:,} candidate pairs made in {time.perf_counter() - started:.1f} s")
        for workers in args.workers:
            out = Path(tmp) / f"scores-{workers}.parquet"
            with PeakMemory() as memory:
                started = time.perf_counter()
                score_file(args.model, candidates, out, shard_rows=args.shard_rows, workers=workers)
                seconds = time.perf_counter() - started
            scored = pl.read_parquet(out)
            assert scored.height == args.pairs and scored["score"].is_finite().all()
            results.append({
                "workers": workers, "pairs": args.pairs, "seconds": round(seconds, 1), "pairs_per_s": round(args.pairs / seconds),
                "peak_rss_total_mb": round(memory.total / 2**20), "peak_rss_worker_mb": round(memory.worker / 2**20),
                "nodes": len(nodes), "cpus": ray.cluster_resources().get("CPU", 0),
            })
            if len(results) > 1:
                assert scored.equals(pl.read_parquet(Path(tmp) / f"scores-{results[0]['workers']}.parquet")), "worker counts disagree"
            r = results[-1]
            r["speedup"] = round(results[0]["seconds"] / seconds, 2)
            print(f"workers={workers}: {seconds:.1f} s, {r['pairs_per_s']:,} pairs/s, speed-up x{r['speedup']}, "
                  f"peak RSS {r['peak_rss_total_mb']:,} MB in all, {r['peak_rss_worker_mb']:,} MB per scoring worker")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()


if __name__ == "__main__":
    main()
