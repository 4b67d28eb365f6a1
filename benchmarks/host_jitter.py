"""How much this machine alone spreads latencies: a fixed CPU workload (Python dict work and small
numpy arrays, no I/O, no allocation growth), repeated, timed one run at a time.

    python benchmarks/host_jitter.py --ms 4

Every run does the same work, so its p99/p50 is the host's (scheduling, shared caches, CPU
frequency, neighbours), not the code's. Read a ranking benchmark's p99 beside it: a request
whose p50 is the workload's p50 cannot have a better p99 than the workload's on the same host.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def workload(loops: int) -> float:
    counts: dict[int, int] = {}
    for i in range(loops):
        counts[i % 500] = counts.get(i % 500, 0) + i
    matrix = np.ones((100, 41))
    for _ in range(50):
        matrix = matrix * 1.0001 + 0.1
    return float(matrix[0, 0]) + len(counts)


def timed(loops: int, runs: int) -> np.ndarray:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        workload(loops)
        out.append(time.perf_counter() - start)
    return np.asarray(out) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ms", type=float, default=4.0, help="the workload's length on this machine (its p50), about")
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    probe = float(np.median(timed(10_000, 50)))  # ms for 10k loops: scale the loop count to --ms
    loops = max(1, int(10_000 * args.ms / probe))
    timed(loops, 50)  # warm-up
    ms = timed(loops, args.runs)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(f"fixed workload, {args.runs} runs: p50 {p50:.2f} / p90 {p90:.2f} / p99 {p99:.2f} ms, "
          f"p99/p50 {p99 / p50:.2f}, max {ms.max():.2f} ms")


if __name__ == "__main__":
    main()
