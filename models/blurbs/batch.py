"""Batch generation with Ray Data (an actor pool of generators) behind a cache keyed by
(item text hash, model version): a rerun generates only new or changed items.

The cache stores the raw generated text, so changing the checks (blocklist, lengths) re-applies
them without generating again. Layout: cache_dir/generations/<model version>/part-*.parquet.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.blurbs.generator import GeneratorSpec
from recsys.core.raytools import ensure_ray

log = logging.getLogger(__name__)
CACHE_SCHEMA = pl.Schema({"text_hash": pl.String, "model_version": pl.String, "raw": pl.String})


def text_hash(title: str | None, text: str | None) -> str:
    return hashlib.sha256(f"{title or ''}\n{text or ''}".encode()).hexdigest()[:16]


def with_text_hash(items: pl.DataFrame) -> pl.DataFrame:
    return items.with_columns(
        text_hash=pl.Series([text_hash(a, b) for a, b in zip(items["title"], items["text"])], dtype=pl.String))


def cache_folder(cache_dir: Path, model_version: str) -> Path:
    return Path(cache_dir) / "generations" / model_version.replace("/", "_")


def read_cache(cache_dir: Path, model_version: str) -> pl.DataFrame:
    parts = sorted(cache_folder(cache_dir, model_version).glob("part-*.parquet"))
    if not parts:
        return CACHE_SCHEMA.to_frame()
    return pl.concat([pl.read_parquet(p) for p in parts]).unique("text_hash", keep="last")


def write_cache(cache_dir: Path, frame: pl.DataFrame) -> None:
    if frame.height == 0:
        return
    folder = cache_folder(cache_dir, frame["model_version"][0])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-{uuid.uuid4().hex}.tmp"
    frame.select(list(CACHE_SCHEMA)).write_parquet(tmp)
    tmp.rename(folder / f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet")  # atomic: no torn parts


class GenerateBatch:
    """Ray Data actor: loads the generator once, then writes blurbs for batches of items."""

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        self.generator = spec.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        raw = self.generator.generate([str(t) for t in batch["title"]], [str(t) for t in batch["text"]])
        return {"text_hash": batch["text_hash"], "model_version": np.array([self.spec.version] * len(raw)),
                "raw": np.array(raw, dtype=object)}


class Progress:
    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last > 5 or self.done == self.total:
            self.last = now
            log.info("%s: %d/%d items, %.2f items/s", self.label, self.done, self.total, self.rate)

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)


def _generate_ray(todo: pl.DataFrame, spec: GeneratorSpec, batch_size: int, actors: int, actor_cpus: float,
                  progress: Progress) -> pl.DataFrame:
    import ray.data

    ensure_ray()
    table = todo.select("text_hash", "title", "text").to_arrow()
    # One block per batch: actors share the work and progress arrives batch by batch.
    ds = ray.data.from_arrow([table.slice(s, batch_size) for s in range(0, table.num_rows, batch_size)])
    ds = ds.map_batches(GenerateBatch, fn_constructor_kwargs={"spec": spec}, batch_size=batch_size,
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=actor_cpus)
    parts = []
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        frame = pl.from_arrow(batch)
        parts.append(frame)  # type: ignore[arg-type]
        progress.update(frame.height)
    return pl.concat(parts) if parts else CACHE_SCHEMA.to_frame()


def _generate_local(todo: pl.DataFrame, spec: GeneratorSpec, batch_size: int, progress: Progress) -> pl.DataFrame:
    actor = GenerateBatch(spec)
    parts = []
    for start in range(0, todo.height, batch_size):
        chunk = todo.slice(start, batch_size)
        out = actor({c: chunk[c].to_numpy() for c in ("text_hash", "title", "text")})
        parts.append(pl.DataFrame({k: list(v) for k, v in out.items()}, schema=CACHE_SCHEMA))
        progress.update(chunk.height)
    return pl.concat(parts) if parts else CACHE_SCHEMA.to_frame()


def generate_cached(items: pl.DataFrame, spec: GeneratorSpec, cache_dir: Path, *, batch_size: int = 32,
                    actors: int = 1, actor_cpus: float = 1.0, use_ray: bool = True) -> tuple[pl.DataFrame, dict[str, float]]:
    """Raw generations for every item (columns of CACHE_SCHEMA) and stats; only cache misses are generated.

    `items` needs item_id, title, text and text_hash. Items sharing a text are generated once.
    """
    cached = read_cache(cache_dir, spec.version)
    unique = items.select("text_hash", "title", "text").unique("text_hash", maintain_order=True)
    todo = unique.join(cached.select("text_hash"), on="text_hash", how="anti")
    # Similar lengths in one batch waste less padding.
    todo = todo.with_columns(_n=pl.col("text").str.len_chars()).sort("_n").drop("_n")
    progress = Progress(todo.height, f"blurbs [{spec.version}]")
    log.info("blurbs: %d items, %d cached, %d to generate", unique.height, unique.height - todo.height, todo.height)
    new = CACHE_SCHEMA.to_frame()
    if todo.height:
        run = _generate_ray if use_ray else None
        new = (run(todo, spec, batch_size, actors, actor_cpus, progress) if run
               else _generate_local(todo, spec, batch_size, progress))
        new = new.cast(dict(CACHE_SCHEMA))  # type: ignore[arg-type]
        write_cache(cache_dir, new)
    seconds = time.perf_counter() - progress.start
    stats = {"unique_texts": float(unique.height), "cache_hits": float(unique.height - todo.height),
             "cache_misses": float(todo.height), "generate_s": seconds,
             "blurbs_per_s": todo.height / seconds if todo.height else 0.0}
    return pl.concat([cached, new]).unique("text_hash", keep="last"), stats
