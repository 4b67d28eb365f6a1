"""In-process ranking latency of two source trees, measured side by side: on a shared machine a
run's speed drifts by half within minutes, so runs made one after the other compare the weather.

    git worktree add /tmp/before HEAD~3 && ln -s "$PWD/.venv" /tmp/before/.venv
    python benchmarks/serve_ab.py --model RUN /tmp/before .

Each tree's `RankingService` runs in its own process (its own code, the same run directory and
requests); the processes take turns, a block of requests each, over the same request list twice
(the second pass finds user vectors cached, as a returning user would). Prints p50/p90/p99/mean
per tree and the paired p50 of the per-request differences.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = r"""
import json, os, sys, tempfile, time
for name in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(name, "1")
sys.path.insert(0, os.getcwd())
import torch
torch.set_num_threads(1)
from serving.api_models import RankRequest
from serving.bench import make_requests
from serving.service import RankingService, ServeSettings
service = RankingService(ServeSettings(model=sys.argv[1], state_dir=tempfile.mkdtemp(), reload_seconds=0))
requests = [RankRequest(**r) for r in make_requests(service, int(sys.argv[2]), int(sys.argv[3]))]
service.rank(requests[0])
print("ready", flush=True)
for line in sys.stdin:
    lo, hi = map(int, line.split())
    seconds = []
    for req in requests[lo:hi]:
        t = time.perf_counter()
        service.rank(req)
        seconds.append(time.perf_counter() - t)
    print(json.dumps(seconds), flush=True)
service.stop()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained run directory")
    parser.add_argument("trees", nargs=2, type=Path, help="two source trees (each with the project's code at its root)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--block", type=int, default=10, help="requests a tree ranks before the other takes its turn")
    args = parser.parse_args()

    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(Path(args.model).resolve()), str(args.requests), str(args.candidates)],
                              cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for tree in args.trees]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "a tree's service did not start"
    seconds: list[list[float]] = [[], []]
    for lo in list(range(0, args.requests, args.block)) * 2:
        for n, proc in enumerate(procs):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{lo} {lo + args.block}\n")
            proc.stdin.flush()
            seconds[n] += json.loads(proc.stdout.readline())
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    for tree, times in zip(args.trees, seconds):
        ms = np.array(times) * 1000.0
        print(f"{str(tree):<30} p50 {np.percentile(ms, 50):6.2f}  p90 {np.percentile(ms, 90):6.2f}  "
              f"p99 {np.percentile(ms, 99):6.2f}  mean {ms.mean():6.2f} ms  ({len(ms)} requests)")
    diff = (np.array(seconds[1]) - np.array(seconds[0])) * 1000.0
    print(f"second - first, per request: p50 {np.percentile(diff, 50):+.2f} ms, mean {diff.mean():+.2f} ms")


if __name__ == "__main__":
    main()
