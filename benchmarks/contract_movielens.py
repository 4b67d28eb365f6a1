"""Reproduce ../shared/CONTRACT.md's protocol on MovieLens latest-small through the CLI.

    python benchmarks/contract_movielens.py [--config experiments/default.toml] [--origins 0.8]
                                            [--origins 0.6 0.7 0.8 0.9]   # rolling origin

For each origin q: ratings -> clicks (rating >= 4), cutoff = q-th percentile of timestamps; the
engine sees only events before it (`recsys data import events` + `recsys train`); test users have
>= 5 training events and >= 1 click after the cutoff (up to 200, fixed seed); candidates are every
catalog item the user did not interact with in training; `recsys score` ranks them; relevant =
items clicked after the cutoff. Prints nDCG@10, Recall@10, MRR@10 with bootstrap 95% CIs, for the
engine and for popularity on the same split, per origin and pooled.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recsys.metrics import mean_with_ci, per_request

ML = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "movielens-latest-small"


def cli(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "recsys.cli", *map(str, args)], check=True)


def prepare(origin: float, work: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    ratings = pl.read_csv(ML / "ratings.csv")
    cutoff = ratings["timestamp"].quantile(origin, "nearest")
    events = ratings.select(
        user_id=pl.col("userId").cast(pl.String), item_id=pl.col("movieId").cast(pl.String),
        ts=pl.col("timestamp"), clicked=(pl.col("rating") >= 4).cast(pl.Int8),
    )
    train, after = events.filter(pl.col("ts") < cutoff), events.filter(pl.col("ts") >= cutoff)
    movies = pl.read_csv(ML / "movies.csv")
    tags = pl.read_csv(ML / "tags.csv").filter(pl.col("timestamp") < cutoff)  # no tag from after the cutoff
    tag_text = tags.group_by("movieId").agg(pl.col("tag").str.to_lowercase().unique().sort().str.join(", "))
    items = movies.join(tag_text, on="movieId", how="left").select(
        item_id=pl.col("movieId").cast(pl.String), title="title",
        text=pl.col("title") + ". Genres: " + pl.col("genres").str.replace_all(r"\|", ", ") + "."
        + pl.when(pl.col("tag").is_not_null()).then(" Tags: " + pl.col("tag") + ".").otherwise(pl.lit("")),
    )
    work.mkdir(parents=True, exist_ok=True)
    items.write_csv(work / "items.csv")
    train.with_columns(timestamp=pl.from_epoch("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).select(
        "user_id", "item_id", "timestamp", "clicked").write_csv(work / "events.csv")
    active = train.group_by("user_id").len().filter(pl.col("len") >= 5).select("user_id")
    clickers = after.filter(pl.col("clicked") == 1).select("user_id").unique().join(active, on="user_id").sort("user_id")
    users = clickers.sample(min(200, clickers.height), seed=0) if clickers.height else clickers
    seen = train.select("user_id", "item_id").unique()
    candidates = users.join(items.select("item_id"), how="cross").join(seen, on=["user_id", "item_id"], how="anti")
    relevant = after.filter(pl.col("clicked") == 1).select("user_id", "item_id").unique()
    candidates.write_parquet(work / "candidates.parquet")
    pop = train.group_by("item_id").agg(pop=pl.col("clicked").cast(pl.Float64).sum())
    return candidates.join(pop, on="item_id", how="left").with_columns(pl.col("pop").fill_null(0.0)), relevant


def judge(scored: pl.DataFrame, relevant: pl.DataFrame, column: str) -> pl.DataFrame:
    labelled = scored.join(relevant.with_columns(label=pl.lit(1)), on=["user_id", "item_id"], how="left")
    return per_request(labelled.select(request_id="user_id", item_id="item_id", label=pl.col("label").fill_null(0),
                                       score=pl.col(column)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/default.toml")
    parser.add_argument("--origins", type=float, nargs="+", default=[0.8])
    parser.add_argument("--work", type=Path, default=Path("bench_out/contract"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    pooled: dict[str, list[pl.DataFrame]] = {"engine": [], "popularity": []}
    for origin in args.origins:
        work = args.work / f"q{int(origin * 100)}"
        candidates, relevant = prepare(origin, work)
        started = time.perf_counter()
        cli("data", "import", "events", "--events", work / "events.csv", "--items", work / "items.csv", "--out", work / "data")
        overrides = [a for o in args.overrides for a in ("--set", o)]
        cli("train", "--data", work / "data", "--run-dir", work / "run", "-c", args.config, "--no-track", *overrides)
        cli("score", "--run", work / "run", "--candidates", work / "candidates.parquet", "--out", work / "scores.parquet")
        seconds = time.perf_counter() - started
        scores = pl.read_parquet(work / "scores.parquet")
        assert scores.height == candidates.height and not scores["score"].is_nan().any()
        engine = judge(candidates.with_columns(score=scores["score"]), relevant, "score")
        popularity = judge(candidates, relevant, "pop")
        pooled["engine"].append(engine)
        pooled["popularity"].append(popularity)
        print(f"\norigin q={origin}: {engine.height} test users, {candidates.height:,} candidates, "
              f"import+train+score {seconds:.0f}s at {datetime.now(timezone.utc):%H:%M}Z")
        report({"engine": engine, "popularity": popularity})
    if len(args.origins) > 1:
        print(f"\npooled over origins {args.origins}")
        report({k: pl.concat(v) for k, v in pooled.items()})


def report(tables: dict[str, pl.DataFrame]) -> None:
    print(f"{'system':<12} {'nDCG@10 [95% CI]':<26} {'Recall@10':<24} {'MRR@10':<24}")
    for name, per_req in tables.items():
        cells = []
        for metric in ("ndcg@10", "recall@10", "mrr@10"):
            est = mean_with_ci(np.asarray(per_req[metric]))
            cells.append(f"{est.mean:.3f} [{est.low:.3f}, {est.high:.3f}]")
        print(f"{name:<12} {cells[0]:<26} {cells[1]:<24} {cells[2]:<24}")


if __name__ == "__main__":
    main()
