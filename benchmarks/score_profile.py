"""Where batch scoring's time goes, in one process: `Scorer.score` over N random candidate pairs
of a trained run (the pairs `benchmarks/batch_score.py` makes), under cProfile.

    python benchmarks/score_profile.py --run RUN_DIR --pairs 200000 [--top 25]

Prints pairs/s and the functions with the most cumulative time. Set OMP_NUM_THREADS=1 to see one
Ray Data worker's share of a 2-core machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.batch_score import make_candidates
from serving.scorer import Scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run directory")
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_candidates(args.run, args.pairs, Path(tmp) / "candidates.parquet")
        frame = pl.read_parquet(Path(tmp) / "candidates.parquet").sort("user_id")  # shards hold whole users
    scorer = Scorer(args.run)
    scorer.score(frame.head(2000))  # loads the lazy parts (counters, user tower) outside the timing
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    scorer.score(frame)
    profile.disable()
    seconds = time.perf_counter() - started
    print(f"{frame.height:,} pairs in {seconds:.1f} s: {frame.height / seconds:,.0f} pairs/s (under cProfile)")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
