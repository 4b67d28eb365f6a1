"""What the text features are worth to the ranker: paired ablations from finished runs.

    .venv/bin/python benchmarks/feature_value.py RUN_DIR [RUN_DIR ...] [--split test] [--json OUT.json]

Every default `recsys train` run trains, beside the full ranker, the same ranker without the
blurb features (`ranker_no_blurbs`) and without any text feature (`ranker_no_text`: behavioural
groups only) for its release gate. This scores each of them on the run's own held-out groups
(`features/test.parquet`, or valid) and prints, per job (group shape: catalog, page), nDCG@10 of
each and the paired difference full - ablated over the same requests with a bootstrap 95% CI.
Several runs (e.g. the MovieLens contract origins) are pooled: their requests are concatenated,
each run's requests kept apart. A candidate the run did not train (blurbs off,
no text groups) is reported as missing, not as zero.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from models.ranker import load_ranker
from recsys.core.metrics import mean_with_ci, per_request

ABLATIONS = {"blurb features": "ranker_no_blurbs", "all text features (interest, topics, blurbs)": "ranker_no_text"}


def per_request_scores(run_dir: Path, split: str, candidate: str, tag: str = "") -> pl.DataFrame | None:
    """request_id (prefixed with `tag`: runs' request ids repeat), shape, ndcg@10 of one candidate
    ranker on the run's groups (None if not trained)."""
    if not (run_dir / candidate / "result.json").exists():
        return None
    frame = pl.read_parquet(run_dir / "features" / f"{split}.parquet")
    scores = load_ranker(run_dir / candidate).predict(frame)
    shapes = frame.select("request_id", "shape").unique("request_id") if "shape" in frame.columns else None
    metrics = per_request(frame.select("request_id", "item_id", "label").with_columns(score=pl.Series(scores)))
    metrics = metrics.select("request_id", "ndcg@10")
    if shapes is None:
        metrics = metrics.with_columns(shape=pl.lit("all"))
    else:
        metrics = metrics.join(shapes, on="request_id", how="left")
    return metrics.with_columns(request_id=pl.lit(tag) + pl.col("request_id").cast(pl.String))


def ablation_table(run_dirs: list[Path], split: str) -> list[dict[str, object]]:
    full = [per_request_scores(r, split, "ranker_full", f"{n}/") for n, r in enumerate(run_dirs)]
    missing = [str(r) for r, f in zip(run_dirs, full) if f is None]
    if missing:
        raise SystemExit(f"no ranker_full in {missing}: give finished `recsys train` run directories")
    base = pl.concat([f for f in full if f is not None])
    rows: list[dict[str, object]] = []
    for label, candidate in ABLATIONS.items():
        parts = [per_request_scores(r, split, candidate, f"{n}/") for n, r in enumerate(run_dirs)]
        if any(p is None for p in parts):
            rows.append({"without": label, "candidate": candidate, "shape": "-", "requests": 0, "note": "not trained in every run"})
            continue
        other = pl.concat([p for p in parts if p is not None]).select("request_id", ablated="ndcg@10")
        paired = base.join(other, on="request_id", how="inner")
        for shape in sorted(paired["shape"].unique().to_list()):
            part = paired.filter(pl.col("shape") == shape)
            full_est = mean_with_ci(part["ndcg@10"].to_numpy())
            ablated_est = mean_with_ci(part["ablated"].to_numpy())
            delta = mean_with_ci(part["ndcg@10"].to_numpy() - part["ablated"].to_numpy())
            rows.append({"without": label, "candidate": candidate, "shape": shape, "requests": part.height,
                         "full": full_est.mean, "ablated": ablated_est.mean,
                         "delta": delta.mean, "delta_low": delta.low, "delta_high": delta.high})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--split", choices=["test", "valid"], default="test")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = ablation_table(args.runs, args.split)
    print(f"{args.split} groups of {len(args.runs)} run(s): nDCG@10, full ranker - ablated, paired over the same requests")
    print("| without | job | requests | full | ablated | full - ablated [95% CI] |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "note" in row:
            print(f"| {row['without']} | - | - | - | - | {row['note']} |")
            continue
        print(f"| {row['without']} | {row['shape']} | {row['requests']} | {row['full']:.4f} | {row['ablated']:.4f} | "
              f"{row['delta']:+.4f} [{row['delta_low']:+.4f}, {row['delta_high']:+.4f}] |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float) + "\n")


if __name__ == "__main__":
    np.seterr(invalid="ignore")
    main()
