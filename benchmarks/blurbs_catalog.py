"""The blurb stage on (a sample of) one catalog: generated share, title repeats, distinct-2, PII /
blocklist / profanity hits, faithfulness and blurbs/s, side by side.

    python benchmarks/blurbs_catalog.py DATA_DIR [--items 48] [--out bench_out/blurbs_catalog]
        [--set finetune=true --set quantize=true ...] [--cache DIR] [--seed-pii] [--local]

Runs `models.blurbs.run` as `recsys train` does (Ray actors; --local: one process, no Ray), on a
seeded sample of the catalog's items, with the
click signal from the time split's training events. Speeds are those of this machine at this
moment: on a shared machine they are lower bounds for an idle one, so print the load beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl

from models.blurbs import BlurbConfig, run
from recsys.core.dataset import Dataset, load_dataset
from recsys.core.splits import time_split

KEYS = ["items", "generated_rate", "first_candidate_pass_rate", "faithfulness_rate", "faithfulness_generated",
        "title_repeat_rate", "distinct_2", "pii_hits_shown", "blocklist_hits_shown", "profanity_hits_shown",
        "stage_s", "prepare_s", "generate_s", "generations", "blurbs_per_s", "finetune_examples",
        "fallback_count_by_reason", "failed_checks_first_candidate"]


def parse_set(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in pairs:
        key, _, value = p.partition("=")
        out[key] = json.loads(value) if value not in ("", None) else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--items", type=int, default=48, help="items sampled (0 = the whole catalog)")
    ap.add_argument("--set", action="append", default=[], help="BlurbConfig field=JSON value")
    ap.add_argument("--out", type=Path, default=Path("bench_out/blurbs_catalog"))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-blurbs-cache")
    ap.add_argument("--seed-pii", action="store_true",
                    help="append an e-mail, a phone number or a URL to every third item's text (none may be shown)")
    ap.add_argument("--local", action="store_true", help="one generator in this process instead of Ray actors")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = load_dataset(args.data)
    items = data.items.sort("item_id")
    if args.items and args.items < items.height:
        items = items.sample(args.items, seed=0)
    if args.seed_pii:
        contact = [" Questions? Write to help.desk@example.com.", " Call +1 (415) 555-0123 to order.",
                   " More at https://www.example-shop.com/item today."]
        items = items.with_row_index("_k").with_columns(pl.when(pl.col("_k") % 3 == 0).then(
            pl.col("text") + pl.col("_k").map_elements(lambda k: contact[(k // 3) % 3], return_dtype=pl.String))
            .otherwise(pl.col("text")).alias("text")).drop("_k")
    sub = Dataset(path=data.path, items=items, events=data.events, manifest=data.manifest)
    cfg = BlurbConfig(**({"use_ray": not args.local} | parse_set(args.set)))  # type: ignore[arg-type]
    out = run(cfg, sub, time_split(data.events).train, args.out, args.cache)
    q = json.loads((out / "quality.json").read_text())
    print(json.dumps({k: q.get(k) for k in KEYS} | {"load_average": os.getloadavg()}, indent=1))
    shown = pl.read_parquet(out / "blurbs.parquet").join(items.select("item_id", "title"), on="item_id")
    for r in shown.filter(pl.col("source") == "generated").head(20).iter_rows(named=True):
        print(f"| {r['title']} | {r['blurb']} |")


if __name__ == "__main__":
    main()
