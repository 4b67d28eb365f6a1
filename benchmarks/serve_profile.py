"""Where one ranking request's time goes, in process: p50/p99 per stage of `RankingService.rank`.

    python benchmarks/serve_profile.py --model /tmp/s/run --requests 300 --candidates 100
    python benchmarks/serve_profile.py --model /tmp/s/run --candidates 500 --json bench_out/profile.json

Stages: body parsing (pydantic from JSON bytes, as FastAPI does), validation, live-log refresh,
the live counters' catch-up, each feature group's `at_moment` twin, the derived request context,
the interest model's user vectors (inside the interest and blurb groups), the feature matrix,
LightGBM predict, contributions and reasons (top_k only), the returned items, the served-feature
log, and the response's JSON encoding. The Ray Serve hop is what `recsys bench serve` adds on
top (its HTTP rows minus the in-process row). One thread per library, as in a replica.
Latencies on a shared machine are upper bounds: compare runs made under similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for name in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as serving/deploy.py's REPLICA_ENV
    os.environ.setdefault(name, "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained run directory or models:/NAME@ALIAS")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from serving.bench import make_requests, print_profile, profile
    from serving.service import RankingService, ServeSettings

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as state:
        service = RankingService(ServeSettings(model=args.model, state_dir=state, reload_seconds=0))
        results = profile(service, make_requests(service, args.requests, args.candidates))
    print_profile(results, f"in-process RankingService.rank, {args.candidates} candidates, {args.requests} requests")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
