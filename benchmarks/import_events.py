"""Benchmark: import N synthetic contract-format event rows; prints wall time and peak RSS.

    python benchmarks/import_events.py --rows 10000000 [--workdir bench_out]

The CSV is generated first (not timed); the import runs in a child process so its peak RSS is
measured on its own (getrusage of children).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl


def make_inputs(rows: int, items: int, workdir: Path) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    events_csv, items_csv = workdir / f"events_{rows}.csv", workdir / f"items_{items}.csv"
    if not items_csv.exists():
        pl.DataFrame({
            "item_id": [f"i{n}" for n in range(items)],
            "title": [f"Item {n}" for n in range(items)],
            "text": [f"A description of item {n}, with a comma" for n in range(items)],
        }).write_csv(items_csv)
    if not events_csv.exists():
        rng = np.random.default_rng(0)
        chunk = 2_000_000
        with open(events_csv, "w") as handle:
            handle.write("user_id,item_id,timestamp,clicked\n")
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                seconds = np.sort(rng.integers(1_700_000_000, 1_702_592_000, size=n))
                frame = pl.DataFrame({
                    "user_id": pl.Series(rng.integers(0, 200_000, size=n)).cast(pl.String),
                    "item_id": pl.Series(rng.integers(0, items, size=n)).cast(pl.String).str.replace(r"^", "i"),
                    "timestamp": pl.Series(seconds * 1_000_000).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "clicked": (rng.random(n) < 0.05).astype(np.int8),
                })
                handle.write(frame.write_csv(include_header=False))
    return events_csv, items_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--workdir", type=Path, default=Path("bench_out"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    events_csv, items_csv = make_inputs(args.rows, args.items, args.workdir)
    print(f"inputs ready in {time.perf_counter() - t0:.1f}s: {events_csv} ({events_csv.stat().st_size / 1e6:.0f} MB)")
    code = (
        "from recsys.data.importers.events import import_events; import sys; "
        "m = import_events(sys.argv[1], sys.argv[2], sys.argv[3]); "
        "print('rows in', m['rows_in'], 'accepted', m['rows']['events'], 'rejected', m['rows']['rejects'])"
    )
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(events_csv), str(items_csv), str(args.workdir / "dataset")], check=True)
    wall = time.perf_counter() - t1
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"import of {args.rows:,} rows: {wall:.1f}s wall, {args.rows / wall:,.0f} rows/s, peak RSS {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
