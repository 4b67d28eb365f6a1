"""Batch generation on a pool of Ray actors (generators) behind a cache keyed by
(item text hash, model version): a rerun generates only new or changed items.

The cache stores the raw generated text, so changing the checks (blocklist, lengths) re-applies
them without generating again. Layout: cache_dir/generations/<model version>/part-*.parquet,
a part every SAVE_EVERY generations, so a stopped stage resumes where it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.blurbs.generator import GeneratorSpec
from recsys.core.raytools import ensure_ray, local_cores, usable_cpus

log = logging.getLogger(__name__)
CACHE_SCHEMA = pl.Schema({"text_hash": pl.String, "model_version": pl.String, "raw": pl.String})
SAVE_EVERY = 1024  # generations (~2 minutes on 2 cores) between cache writes while a stage runs


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
    """Loads the generator once, then writes blurbs for batches of items (here, or in a GeneratorActor)."""

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


class GeneratorActor:
    """A Ray actor that generates batches for any spec of one stage; the weights stay loaded across
    specs (generator._MODELS), so retry rounds reuse the process instead of starting one."""

    def generate(self, spec: GeneratorSpec, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        return GenerateBatch(spec)(batch)


class GeneratorPool:
    """Ray actors shared by a stage's rounds (first round, retries, fine-tune targets).

    actors = 0: one per usable CPU / actor_cpus, at most one per batch of the first round that
    uses the pool. Measured on 2 cores, 64 items a batch: two single-threaded generators wrote 7.2
    blurbs/s, one with two threads 5.6 (a decoding step is many small ops; two processes also run
    the per-row logits processors side by side). Starting the pool once per stage instead of per
    round saved the ~15 s each retry round spent starting a Ray Data actor pool and loading weights.
    """

    def __init__(self, actors: int, actor_cpus: float, batch_timeout_s: float = 1800.0) -> None:
        self.actors, self.actor_cpus, self.batch_timeout_s = actors, actor_cpus, batch_timeout_s
        self.handles: list[Any] = []

    def _start(self, batches: int) -> None:
        import ray

        ensure_ray()
        n = self.actors or max(1, min(batches, int(usable_cpus() // self.actor_cpus)))
        remote = ray.remote(num_cpus=self.actor_cpus)(GeneratorActor)
        self.handles = [remote.remote() for _ in range(n)]
        log.info("blurbs: %d generator actor(s), %.1f CPU each", n, self.actor_cpus)

    def map(self, spec: GeneratorSpec, blocks: list[dict[str, np.ndarray]]) -> Iterator[dict[str, Any]]:
        """Generations for every block, in the order they finish."""
        from ray.util import ActorPool

        if not self.handles:
            self._start(len(blocks))
        pool = ActorPool(self.handles)
        for block in blocks:
            pool.submit(lambda actor, b: actor.generate.remote(spec, b), block)
        while pool.has_next():
            try:
                yield pool.get_next_unordered(timeout=self.batch_timeout_s)
            except TimeoutError as err:  # a wait with a deadline: a stuck actor must not hang `recsys train`
                raise RuntimeError(f"blurbs: no batch finished within {self.batch_timeout_s:.0f} s") from err

    def close(self) -> None:
        if not self.handles:
            return
        import ray

        for handle in self.handles:
            ray.kill(handle)
        self.handles = []

    def __enter__(self) -> GeneratorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _blocks(todo: pl.DataFrame, batch_size: int) -> list[dict[str, np.ndarray]]:
    return [{c: chunk[c].to_numpy() for c in ("text_hash", "title", "text")}
            for chunk in (todo.slice(s, batch_size) for s in range(0, todo.height, batch_size))]


def _generate_ray(todo: pl.DataFrame, spec: GeneratorSpec, batch_size: int, pool: GeneratorPool) -> Iterator[pl.DataFrame]:
    for out in pool.map(spec, _blocks(todo, batch_size)):
        yield pl.DataFrame({k: list(v) for k, v in out.items()}, schema=CACHE_SCHEMA)


def _generate_local(todo: pl.DataFrame, spec: GeneratorSpec, batch_size: int) -> Iterator[pl.DataFrame]:
    # one generator in this process: it may use every core (threads_per_actor sizes Ray actors)
    actor = GenerateBatch(dataclasses.replace(spec, threads=max(spec.threads, local_cores())))
    for block in _blocks(todo, batch_size):
        out = actor(block)
        yield pl.DataFrame({k: list(v) for k, v in out.items()}, schema=CACHE_SCHEMA)


def _own_pool(todo: pl.DataFrame, spec: GeneratorSpec, batch_size: int, actors: int,
              actor_cpus: float) -> Iterator[pl.DataFrame]:
    with GeneratorPool(actors, actor_cpus) as own:
        yield from _generate_ray(todo, spec, batch_size, own)


def generate_cached(items: pl.DataFrame, spec: GeneratorSpec, cache_dir: Path, *, batch_size: int = 64,
                    actors: int = 0, actor_cpus: float = 1.0, use_ray: bool = True,
                    pool: GeneratorPool | None = None, save_every: int = SAVE_EVERY) -> tuple[pl.DataFrame, dict[str, float]]:
    """Raw generations for every item (columns of CACHE_SCHEMA) and stats; only cache misses are generated.

    `items` needs item_id, title, text and text_hash. Items sharing a text are generated once. With
    use_ray, `pool` (a stage's GeneratorPool) generates; without one, a pool lives for this call.
    Generations go to the cache every `save_every` items as they finish, so a stage that is
    stopped (or fails) midway starts again from what it had written.
    """
    cached = read_cache(cache_dir, spec.version)
    unique = items.select("text_hash", "title", "text").unique("text_hash", maintain_order=True)
    todo = unique.join(cached.select("text_hash"), on="text_hash", how="anti")
    # Similar lengths in one batch waste less padding.
    todo = todo.with_columns(_n=pl.col("text").str.len_chars()).sort("_n").drop("_n")
    progress = Progress(todo.height, f"blurbs [{spec.version}]")
    log.info("blurbs: %d items, %d cached, %d to generate", unique.height, unique.height - todo.height, todo.height)
    if not todo.height:
        frames: Iterator[pl.DataFrame] = iter(())
    elif not use_ray:
        frames = _generate_local(todo, spec, batch_size)
    elif pool is not None:
        frames = _generate_ray(todo, spec, batch_size, pool)
    else:
        frames = _own_pool(todo, spec, batch_size, actors, actor_cpus)
    done: list[pl.DataFrame] = []
    unsaved: list[pl.DataFrame] = []
    for frame in frames:
        frame = frame.cast(dict(CACHE_SCHEMA))  # type: ignore[arg-type]
        done.append(frame)
        unsaved.append(frame)
        progress.update(frame.height)
        if sum(f.height for f in unsaved) >= save_every:
            write_cache(cache_dir, pl.concat(unsaved))
            unsaved = []
    if unsaved:
        write_cache(cache_dir, pl.concat(unsaved))
    new = pl.concat(done) if done else CACHE_SCHEMA.to_frame()
    seconds = time.perf_counter() - progress.start
    stats = {"unique_texts": float(unique.height), "cache_hits": float(unique.height - todo.height),
             "cache_misses": float(todo.height), "generate_s": seconds,
             "blurbs_per_s": todo.height / seconds if todo.height else 0.0}
    return pl.concat([cached, new]).unique("text_hash", keep="last"), stats
