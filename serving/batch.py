"""`recsys score`: score a candidates parquet with Ray Data, resumable by shard.

Candidates are cut into shards of `shard_rows` in file order; each finished shard is written
atomically under OUT.parts/, so a rerun after a kill scores only the missing shards. The result
has exactly one row per candidate row, in the input order.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
from tqdm import tqdm

from recsys.errors import RecsysInputError
from recsys.raytools import ensure_ray
from recsys.schemas import SCORES_SCHEMA

log = logging.getLogger(__name__)


class ScoreBatch:
    """A Ray Data actor: loads the Scorer once, scores batches of pairs."""

    def __init__(self, run_dir: str) -> None:
        from serving.scorer import Scorer

        self.scorer = Scorer(Path(run_dir))

    def __call__(self, batch: dict) -> dict:
        frame = pl.DataFrame({"user_id": batch["user_id"], "item_id": batch["item_id"]})
        return {"user_id": batch["user_id"], "item_id": batch["item_id"], "score": self.scorer.score(frame)}


def read_candidates(path: Path) -> pl.DataFrame:
    if not Path(path).exists():
        raise RecsysInputError(f"CANDIDATES: file not found: {path}")
    try:
        frame = pl.read_parquet(path)
    except Exception as err:
        raise RecsysInputError(f"CANDIDATES: {path} is not a readable parquet file ({err})") from None
    missing = [c for c in ("user_id", "item_id") if c not in frame.columns]
    if missing:
        raise RecsysInputError(f"CANDIDATES: {path} lacks column(s) {missing}; found {frame.columns}; expected user_id, item_id")
    frame = frame.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    nulls = frame.with_row_index("row").filter(pl.col("user_id").is_null() | pl.col("item_id").is_null())
    if nulls.height:
        raise RecsysInputError(f"CANDIDATES: {nulls.height} row(s) with a null user_id or item_id (first at row {nulls['row'][0]})")
    return frame


def score_file(run_dir: Path, candidates: Path, out: Path, *, shard_rows: int = 250_000, batch_size: int = 50_000,
               workers: int = 1) -> Path:
    import ray

    frame = read_candidates(candidates)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    shards = list(range(0, max(frame.height, 1), shard_rows))
    todo = [k for k, _ in enumerate(shards) if not (parts / f"part-{k:05d}.parquet").exists()]
    log.info("scoring %d candidate rows in %d shard(s); %d already done", frame.height, len(shards), len(shards) - len(todo))
    if todo:
        ensure_ray()
    for k in tqdm(todo, desc="scoring shards", unit="shard", disable=None):
        shard = frame.slice(shards[k], shard_rows)
        ds = ray.data.from_arrow(shard.to_arrow()).map_batches(
            ScoreBatch, fn_constructor_args=(str(run_dir),), batch_size=batch_size, batch_format="numpy",
            concurrency=workers, num_cpus=1,
        )
        scored = pl.from_arrow(pa.concat_tables(ray.get(ds.to_arrow_refs())))
        # Ray Data may reorder blocks: restore the shard's order
        scored = _in_order(shard, scored)  # type: ignore[arg-type]
        tmp = parts / f"part-{k:05d}.parquet.tmp"
        scored.write_parquet(tmp)
        tmp.rename(parts / f"part-{k:05d}.parquet")
    result = pl.concat([pl.read_parquet(parts / f"part-{k:05d}.parquet") for k in range(len(shards))]) if frame.height else SCORES_SCHEMA.to_frame()
    result = result.select(pl.col(c).cast(t) for c, t in SCORES_SCHEMA.items())
    if result.height != frame.height or result["score"].is_nan().any():
        raise AssertionError(f"bug: {result.height} scores for {frame.height} candidates or NaN scores")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.write_parquet(out)
    shutil.rmtree(parts)
    return out


def _in_order(shard: pl.DataFrame, scored: pl.DataFrame) -> pl.DataFrame:
    keyed = scored.unique(["user_id", "item_id"], keep="first")
    return shard.join(keyed, on=["user_id", "item_id"], how="left", maintain_order="left").select("user_id", "item_id", "score")
