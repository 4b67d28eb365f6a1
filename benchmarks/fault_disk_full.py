"""Fault: the service's state directory on a real filesystem that fills up, then gets space back.

    sudo python benchmarks/fault_disk_full.py [--model bench_out/soak/run] [--mb 2]

Mounts a tmpfs of --mb MiB (needs root) as the state directory, posts feedback through the real
FastAPI app (20 events a call, each with its own request id) until the disk is full, ranks while it
is full, then grows the tmpfs (`mount -o remount,size=`) and posts again, with no restart. Prints
the answers counted by status, the Retry-After, how long recovery took, and checks on a restarted
service that every acknowledged event is there exactly once and no refused one is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("bench_out/soak/run"), help="a run directory")
    parser.add_argument("--mb", type=int, default=2)
    args = parser.parse_args()

    import polars as pl
    from fastapi.testclient import TestClient

    from serving.http import build_app
    from serving.service import RankingService, ServeSettings

    mount = Path(tempfile.mkdtemp(prefix="recsys-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.mb}m", "tmpfs", str(mount)], check=True)
    try:
        settings = ServeSettings(model=str(args.model), state_dir=str(mount), reload_seconds=0, rank_per_key=0, rank_per_user=0,
                                 feedback_per_key=0, feedback_per_user=0)
        service = RankingService(settings)
        client = TestClient(build_app(lambda: service), raise_server_exceptions=False)
        items = sorted(service.arms["champion"].catalog)[:20]
        statuses: Counter[int] = Counter()
        acked, refused, retry_after = [], [], set()
        n = 0

        def post() -> int:
            nonlocal n
            ids = [f"c{n}-{k}" for k in range(20)]
            n += 1
            res = client.post("/v1/feedback", json={"events": [
                {"user_id": f"u{n % 50}", "item_id": i, "clicked": 0, "request_id": r} for i, r in zip(items, ids)]})
            statuses[res.status_code] += 1
            (acked if res.status_code == 200 else refused).extend(ids)
            if res.status_code == 503:
                retry_after.add(res.headers.get("Retry-After"))
            return res.status_code

        while statuses[503] < 20 and n < 100_000:
            post()
        rank = client.post("/v1/rank", json={"user_id": "u1", "item_ids": items})
        print(f"disk full after {statuses[200]:,} acknowledged calls ({len(acked):,} events); "
              f"then {statuses[503]} x 503 (Retry-After {sorted(retry_after)}); /v1/rank while full: {rank.status_code}")
        subprocess.run(["mount", "-o", f"remount,size={args.mb * 4}m", str(mount)], check=True)
        began = time.perf_counter()
        while post() != 200:
            pass
        print(f"space back: first 200 after {1000 * (time.perf_counter() - began):.1f} ms, no restart")
        for _ in range(20):
            post()
        restarted = RankingService(settings).state.snapshot().log
        logged = restarted.filter(pl.col("request_id").str.starts_with("c"))["request_id"].to_list()
        print(f"restarted: {len(logged):,} events logged; acknowledged {len(acked):,}; "
              f"all acknowledged there: {set(acked) <= set(logged)}; duplicates: {len(logged) - len(set(logged))}; "
              f"refused ones there: {len(set(refused) & set(logged))}; statuses {dict(statuses)}")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


if __name__ == "__main__":
    main()
