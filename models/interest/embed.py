"""Item vectors for a whole catalog, computed in batch with Ray Data map_batches.

Ray Data waits silently (forever) for CPUs a finished Train run or another job still holds, so
the encoding actor asks for a fraction of a CPU, and when even that is not free within a short
wait the vectors are computed in this process instead (same model, same batches).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

EMBEDDINGS_FILE = "item_embeddings.parquet"
log = logging.getLogger(__name__)


class _Encode:
    """Ray Data callable class: loads the saved model once per actor, encodes text batches."""

    def __init__(self, model_dir: str, threads: int) -> None:
        import torch

        from models.interest.model import InterestModel

        torch.set_num_threads(threads)
        self.model, self.tokenizer = InterestModel.load(Path(model_dir))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from models.interest.model import encode_texts

        vecs = encode_texts(self.model, self.tokenizer, [str(t) for t in batch["item_text"]],
                            self.model.cfg.max_len, batch_size=len(batch["item_text"]))
        return {"item_id": batch["item_id"], "embedding": vecs.numpy().astype(np.float32)}


def _cpus_free(num_cpus: float, wait_s: float) -> bool:
    """Whether Ray has `num_cpus` free now or within `wait_s` (a finished Train run's workers
    and placement group take a moment to hand theirs back)."""
    import ray

    deadline = time.monotonic() + wait_s
    while True:
        if ray.available_resources().get("CPU", 0.0) >= num_cpus:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _encode_in_process(texts: pl.DataFrame, model_dir: Path, batch_size: int, threads: int) -> tuple[list[str], list[np.ndarray]]:
    enc = _Encode(str(model_dir), threads)
    ids, vecs = texts["item_id"].to_list(), []
    for i in range(0, texts.height, batch_size):
        part = texts[i:i + batch_size]
        vecs.append(enc({"item_id": part["item_id"].to_numpy(), "item_text": part["item_text"].to_numpy()})["embedding"])
    return ids, vecs


def embed_items(texts: pl.DataFrame, model_dir: Path, out_file: Path, batch_size: int = 64,
                threads: int = 2, num_cpus: float = 0.5, ray_wait_s: float = 30.0) -> Path:
    """texts (item_id, item_text) -> parquet (item_id: String, embedding: Array(Float32, d)).
    Ray Data map_batches by default; in-process when Ray has not `num_cpus` free within `ray_wait_s`."""
    import ray

    if _cpus_free(num_cpus, ray_wait_s):
        ds = ray.data.from_arrow(texts.to_arrow())
        ds = ds.map_batches(_Encode, fn_constructor_args=(str(model_dir), threads), batch_size=batch_size,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=num_cpus)
        ids, vecs = [], []
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            ids.extend(str(i) for i in batch["item_id"])
            vecs.append(np.asarray(batch["embedding"], dtype=np.float32))
    else:
        log.warning("item embeddings: Ray has not %.2f CPU free after %.0f s (%s); encoding in this process",
                    num_cpus, ray_wait_s, ray.available_resources())
        ids, vecs = _encode_in_process(texts, model_dir, batch_size, threads)
    mat = np.concatenate(vecs) if vecs else np.zeros((0, 1), np.float32)
    missing = texts.height - len(set(ids))
    if missing:
        raise RuntimeError(f"item embeddings: {missing} item(s) came back without a vector")
    return write_embeddings(ids, mat, out_file)


def write_embeddings(ids: list[str], mat: np.ndarray, out_file: Path) -> Path:
    """The item-vector file `read_embeddings` reads: item_id (String), embedding (Array(Float32, d)),
    sorted by item_id."""
    out = pl.DataFrame({"item_id": pl.Series(ids, dtype=pl.String),
                        "embedding": pl.Series(np.asarray(mat, dtype=np.float32), dtype=pl.Array(pl.Float32, mat.shape[1]))})
    out.sort("item_id").write_parquet(out_file)
    return out_file


def _dim(frame: pl.DataFrame) -> int:
    col = frame["embedding"]
    return col.dtype.size if isinstance(col.dtype, pl.Array) else len(col[0])


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    frame = pl.read_parquet(path)
    ids = frame["item_id"].to_list()
    mat = frame["embedding"].cast(pl.List(pl.Float32)).list.to_array(_dim(frame)).to_numpy() if ids else np.zeros((0, 0))
    return ids, np.asarray(mat, dtype=np.float32).reshape(len(ids), -1)
