"""`recsys score`: score a candidates parquet with Ray Data, resumable by shard.

Candidates are cut into shards of `shard_rows` in file order; each finished shard is written
atomically under OUT.parts/, so a rerun after a kill scores only the missing shards. The result
has exactly one row per candidate row, in the input order.

One Ray Data pipeline streams every missing shard through `workers` long-lived actors (each
loads the run once); the driver collects each shard's rows as they come back and writes the
shard when it is complete. Data moves through Ray's object store, so it runs unchanged on a
cluster (`RAY_ADDRESS`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from tqdm import tqdm

from models.ranker import fingerprint
from recsys.core.dataset import file_sha256
from recsys.core.errors import RecsysInputError
from recsys.core.raytools import ensure_ray
from recsys.core.schemas import SCORES_SCHEMA

log = logging.getLogger(__name__)


class ScoreBatch:
    """A Ray Data actor: loads the Scorer once, scores batches of pairs (shard and row kept)."""

    def __init__(self, run_dir: str) -> None:
        from serving.scorer import Scorer

        self.scorer = Scorer(Path(run_dir))

    def __call__(self, batch: pa.Table) -> pa.Table:
        frame = pl.from_arrow(batch)
        return frame.with_columns(score=pl.Series(self.scorer.score(frame), dtype=pl.Float64)).to_arrow()  # type: ignore[union-attr]


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


def score_file(run_dir: Path, candidates: Path, out: Path, *, shard_rows: int = 250_000, workers: int = 1) -> Path:
    # a user's candidates are one request (the ranker compares them with each other), so each
    # shard holds whole users: rows grouped by user, cut at user boundaries, restored to file order
    frame = read_candidates(candidates).with_row_index("orig").sort("user_id", maintain_order=True)
    parts = out.with_name(out.name + ".parts")
    _claim_parts(parts, _job_key(run_dir, candidates, shard_rows))
    shards = user_shards(frame["user_id"], shard_rows)
    todo = [k for k, _ in enumerate(shards) if not (parts / f"part-{k:05d}.parquet").exists()]
    log.info("scoring %d candidate rows in %d shard(s); %d already done", frame.height, len(shards), len(shards) - len(todo))
    if todo and frame.height:
        ensure_ray()
        _score_shards(run_dir, frame, shards, todo, parts, workers)
    if frame.height:
        result = pl.concat([pl.read_parquet(parts / f"part-{k:05d}.parquet") for k in range(len(shards))]).sort("orig")
    else:
        result = SCORES_SCHEMA.to_frame()
    result = result.select(pl.col(c).cast(t) for c, t in SCORES_SCHEMA.items())
    if result.height != frame.height or result["score"].is_nan().any():
        raise AssertionError(f"bug: {result.height} scores for {frame.height} candidates or NaN scores")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.write_parquet(out)
    shutil.rmtree(parts)
    return out


def user_shards(users: pl.Series, shard_rows: int) -> list[tuple[int, int]]:
    """(offset, length) of shards of about `shard_rows` rows of a user-sorted column, each cut
    at the first user boundary at or after its size (a user never spans two shards)."""
    n = users.len()
    if n == 0:
        return [(0, 0)]
    starts = np.flatnonzero((users != users.shift(1)).fill_null(True).to_numpy())
    shards, offset = [], 0
    while offset < n:
        later = starts[starts >= offset + max(shard_rows, 1)]
        end = int(later[0]) if later.size else n
        shards.append((offset, end - offset))
        offset = end
    return shards


def _job_key(run_dir: Path, candidates: Path, shard_rows: int) -> dict:
    """What the finished shards in OUT.parts were scored from: the model, the candidates, the cut."""
    return {"run": str(Path(run_dir).resolve()), "ranker": fingerprint(Path(run_dir) / "ranker"),
            "candidates": file_sha256(candidates), "shard_rows": shard_rows}


def _claim_parts(parts: Path, key: dict) -> None:
    """Reuse OUT.parts only for the same job: shards scored from another run, other candidates or
    another shard size are cleared (with a warning), never mixed into this output."""
    manifest = parts / "job.json"
    if parts.exists() and manifest.exists() and json.loads(manifest.read_text()) != key:
        log.warning("%s holds shards of another scoring job (%s); starting over", parts, manifest.read_text().strip())
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(key) + "\n")


def _score_shards(run_dir: Path, frame: pl.DataFrame, shards: list[tuple[int, int]], todo: list[int],
                  parts: Path, workers: int) -> None:
    import ray

    refs = [
        ray.put(frame.slice(*shards[k]).with_row_index("row").with_columns(shard=pl.lit(k, pl.Int32)).to_arrow())
        for k in todo
    ]
    expected = {k: shards[k][1] for k in todo}
    # batch_size=None: one call per block = one whole shard, so no user is split between calls
    ds = ray.data.from_arrow_refs(refs).map_batches(
        ScoreBatch, fn_constructor_args=(str(run_dir),), batch_size=None, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
    )
    pending: dict[int, list[pl.DataFrame]] = {k: [] for k in todo}
    have = dict.fromkeys(todo, 0)
    with tqdm(total=len(todo), desc="scoring shards", unit="shard", disable=None) as progress:
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            for (k,), rows in pl.from_arrow(block).partition_by("shard", as_dict=True).items():  # type: ignore[union-attr]
                pending[k].append(rows)
                have[k] += rows.height
                if have[k] == expected[k]:  # complete: Ray Data may reorder rows, the index restores them
                    scored = pl.concat(pending.pop(k)).sort("row").select("orig", "user_id", "item_id", "score")
                    tmp = parts / f"part-{k:05d}.parquet.tmp"
                    scored.write_parquet(tmp)
                    tmp.rename(parts / f"part-{k:05d}.parquet")
                    progress.update(1)
    if pending:
        raise AssertionError(f"bug: shard(s) {sorted(pending)} came back incomplete")
