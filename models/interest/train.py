"""`run`: fine-tune the interest model with Ray Train, then write model/, item vectors, metrics.

out_dir/
  model/                   encoder/ (weights + tokenizer), head.pt, interest_config.json, unknown_user.npy
  item_embeddings.parquet  item_id, embedding (every item of data.items, via Ray Data)
  metrics.json             final + per-epoch valid auc / ndcg@10 (epoch -1 = the pretrained start),
                           "kept": "fine-tuned" or "pretrained" (no epoch beat the start), samples/s
  ray_train/               Ray Train checkpoints; rerunning with the same out_dir resumes from them
  made_by.json             the config and clicks of model/ and ray_train/: others train afresh
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from models.interest.config import InterestConfig
from models.interest.embed import EMBEDDINGS_FILE, embed_items, read_embeddings, write_embeddings
from models.interest.loop import BEST_FILE, STATE_FILE, needed_rows, selection_score, summarize_valid, train_loop, validate
from models.interest.model import CONFIG_FILE, InterestModel, encode_texts, load_tokenizer, new_encoder
from models.interest.samples import to_index, train_lists, valid_frame
from models.interest.text import item_texts
from recsys.core.dataset import Dataset
from recsys.core.raytools import ensure_ray

log = logging.getLogger(__name__)
MODEL_DIR, METRICS_FILE, UNKNOWN_USER_FILE, TRAIN_DIR = "model", "metrics.json", "unknown_user.npy", "ray_train"
CURVES_FILE = "curves.png"
REPLAY_DIR = "replay"  # the pipeline's twin trained before the ranker's replayed cutoffs
MADE_BY_FILE = "made_by.json"  # the config and clicks the model/ and checkpoints here come from


def _fit(cfg: InterestConfig, lists: pl.DataFrame, texts: list[str], item_index: dict[str, int],
         valid: pl.DataFrame, out_dir: Path, base: np.ndarray | None = None) -> tuple[InterestModel, dict[str, Any]]:
    """Ray Train fine-tuning; returns the best model on the valid selection metric (the pretrained
    one when no validation beat it significantly) and the loop state. `base`: the adaptor's
    pretrained item vectors (rows of `texts`), None when encoder layers are trained."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    idx = to_index(lists, item_index, cfg.history_len)
    table = pa.table({"hist": pa.array(list(idx["hist"]), pa.list_(pa.int64())),
                      "cand": pa.array(list(idx["cand"]), pa.list_(pa.int64()))})
    train_ds = ray.data.from_arrow(table).materialize()
    rows = needed_rows(idx, valid, item_index)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.to_dict(), "texts": texts, "item_index": item_index, "valid": valid,
                           "cache_rows": rows, "base_vectors": None if base is None else base[rows],
                           "resume_dir": _latest_checkpoint(out_dir / TRAIN_DIR)},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=ray.train.RunConfig(name="interest", storage_path=str((out_dir / TRAIN_DIR).resolve()),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)),
        datasets={"train": train_ds},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"interest training: Ray Train finished without a checkpoint (see {out_dir / TRAIN_DIR})")
    torch.manual_seed(cfg.seed)
    model = InterestModel(cfg, new_encoder(cfg))  # the pretrained start, kept unless an epoch beat it
    with result.checkpoint.as_directory() as d:
        saved = torch.load(Path(d) / STATE_FILE, weights_only=False)
        if saved["state"].get("kept") == "fine-tuned":
            model.load_state_dict(torch.load(Path(d) / BEST_FILE, weights_only=True))
    model.eval()
    return model, saved["state"]


def _latest_checkpoint(storage: Path) -> str | None:
    """The newest complete checkpoint a killed earlier run left (Ray Train V2 neither hands it to
    a new trainer nor accepts resume_from_checkpoint); None on a first run."""
    done = sorted(p for p in storage.glob("*/checkpoint_*") if (p / STATE_FILE).exists())
    return str(done[-1].resolve()) if done else None


def _zero_shot(cfg: InterestConfig, texts: list[str], item_index: dict[str, int],
               valid: pl.DataFrame) -> tuple[InterestModel, dict[str, Any]]:
    """The starting model without training (attention pooling starts as the mean)."""
    torch.manual_seed(cfg.seed)
    model = InterestModel(cfg, new_encoder(cfg)).eval()
    tokenizer = load_tokenizer()

    def vectors_of(rows: list[int]) -> torch.Tensor:
        return encode_texts(model, tokenizer, [texts[r] for r in rows], cfg.max_len, cfg.embed_batch_size)

    metrics = summarize_valid(validate(model, vectors_of, item_index, valid, cfg))
    return model, {"step": 0, "samples": 0, "train_seconds": 0.0, "kept": "pretrained",
                   "history": [{"epoch": -1, "step": 0, "model": "pretrained", **metrics}]}


BASE_VECTORS_FILE = "base_vectors.parquet"


def _base_vectors(cfg: InterestConfig, text_table: pl.DataFrame, out_dir: Path, reuse: Path | None) -> np.ndarray:
    """The pretrained encoder's unit vector of every item text (rows of text_table), computed once
    with Ray Data (and reused by a second fit on the same catalog): the adaptor trains over them."""
    ids = text_table["item_id"].to_list()
    made_by = {"encoder": cfg.encoder, "max_len": cfg.max_len, "seed": cfg.seed,
               "texts": hashlib.sha256("\n".join(text_table["item_text"].to_list()).encode()).hexdigest()}
    target = out_dir / BASE_VECTORS_FILE
    for path in ([reuse] if reuse is not None else []) + [target]:
        sidecar = path.with_suffix(".json")
        if path.exists() and sidecar.exists() and json.loads(sidecar.read_text()) == made_by:
            saved_ids, mat = read_embeddings(path)
            if path != target:
                shutil.copyfile(path, target)
                shutil.copyfile(sidecar, target.with_suffix(".json"))
            order = {i: n for n, i in enumerate(saved_ids)}
            return mat[[order[i] for i in ids]]
    start_dir = out_dir / "pretrained.tmp"
    shutil.rmtree(start_dir, ignore_errors=True)
    torch.manual_seed(cfg.seed)
    InterestModel(cfg, new_encoder(cfg)).save(start_dir, load_tokenizer())  # the projection starts as the identity
    embed_items(text_table, start_dir, target, batch_size=cfg.embed_batch_size,
                threads=cfg.torch_threads or (os.cpu_count() or 1), num_cpus=min(0.5, cfg.cpus_per_worker))
    shutil.rmtree(start_dir, ignore_errors=True)
    target.with_suffix(".json").write_text(json.dumps(made_by) + "\n")
    return _base_vectors(cfg, text_table, out_dir, None)


def _write_adapted(model: InterestModel, text_table: pl.DataFrame, base: np.ndarray, out_file: Path) -> None:
    """item_embeddings.parquet from the pretrained vectors through the trained projection: the
    same vectors `encode` gives (pooled, normalised, projected, normalised), without a second
    pass of the encoder over the catalog."""
    with torch.no_grad():
        vecs = torch.from_numpy(base)
        if model.projection is not None:
            vecs = torch.nn.functional.normalize(model.projection(vecs), dim=-1)
    write_embeddings(text_table["item_id"].to_list(), vecs.numpy(), out_file)


def _unknown_user(train: pl.DataFrame, out_dir: Path) -> np.ndarray:
    """Fallback user = unit click-weighted mean of the item vectors clicked in training: the
    typical taste, so an unknown user is ranked towards what people generally click."""
    ids, mat = read_embeddings(out_dir / EMBEDDINGS_FILE)
    row = {i: n for n, i in enumerate(ids)}
    clicked = [row[i] for i in train.filter(pl.col("clicked") == 1)["item_id"].to_list() if i in row]
    vec = mat[clicked].mean(0) if clicked else np.zeros(mat.shape[1], dtype=np.float32)
    norm = np.linalg.norm(vec)
    return (vec / norm if norm > 0 else vec).astype(np.float32)


def run(cfg: InterestConfig, data: Dataset, train_events: pl.DataFrame, valid_events: pl.DataFrame,
        out_dir: Path, base_vectors: Path | None = None) -> Path:
    """Fine-tune on train_events, validate on valid_events, write model/, item vectors, metrics.
    `base_vectors`: another run's base_vectors.parquet of the same catalog, reused by the adaptor."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads or (os.cpu_count() or 1))
    text_table = item_texts(data.items)
    texts, item_index = text_table["item_text"].to_list(), {i: n for n, i in enumerate(text_table["item_id"].to_list())}
    valid = valid_frame(valid_events, train_events, cfg.history_len, cfg.max_valid_requests, cfg.seed)
    lists = train_lists(train_events, cfg.history_len, cfg.negatives, cfg.seed, cfg.max_train_samples,
                        cfg.fill_history_from_later)
    model_dir = out_dir / MODEL_DIR
    _forget_other_training(out_dir, {"config": cfg.to_dict(), "train": _fingerprint(train_events),
                                     "valid": _fingerprint(valid_events)})
    ensure_ray()
    adaptor = cfg.trainable_layers == 0
    base = _base_vectors(cfg, text_table, out_dir, base_vectors) if adaptor else None
    if not (model_dir / CONFIG_FILE).exists():  # config is written last: a complete model/ is reused
        if cfg.max_steps == 0 or lists.height == 0:
            model, state = _zero_shot(cfg, texts, item_index, valid)
        else:
            model, state = _fit(cfg, lists, texts, item_index, valid, out_dir, base)
        tmp = out_dir / (MODEL_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp, load_tokenizer())
        torch.save(state, tmp / "train_state.pt")
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.rename(model_dir)
    state = torch.load(model_dir / "train_state.pt", weights_only=False)
    if base is not None:
        _write_adapted(InterestModel.load(model_dir)[0], text_table, base, out_dir / EMBEDDINGS_FILE)
    else:
        embed_items(text_table, model_dir, out_dir / EMBEDDINGS_FILE, batch_size=cfg.embed_batch_size,
                    threads=cfg.torch_threads or (os.cpu_count() or 1), num_cpus=min(0.5, cfg.cpus_per_worker))
    np.save(model_dir / UNKNOWN_USER_FILE, _unknown_user(train_events, out_dir))
    _write_metrics(out_dir, cfg, state, lists.height, valid, time.perf_counter() - started)
    return out_dir


def _fingerprint(events: pl.DataFrame) -> str:
    return hashlib.sha256(events.hash_rows(seed=0).to_numpy().tobytes()).hexdigest()


def _forget_other_training(out_dir: Path, made_by: dict[str, Any]) -> None:
    """A finished model/ is reused and a killed run's checkpoint resumed only when they come from
    this config and these clicks: another `[interest]` setting or other data trains afresh."""
    record = out_dir / MADE_BY_FILE
    made_by = json.loads(json.dumps(made_by))  # as it reads back
    if not record.exists() or json.loads(record.read_text()) != made_by:
        shutil.rmtree(out_dir / MODEL_DIR, ignore_errors=True)
        shutil.rmtree(out_dir / TRAIN_DIR, ignore_errors=True)
        record.write_text(json.dumps(made_by, sort_keys=True) + "\n")


def _write_metrics(out_dir: Path, cfg: InterestConfig, state: dict[str, Any], n_lists: int,
                   valid: pl.DataFrame, wall: float) -> None:
    epochs = state["history"]
    kept = state.get("kept", "fine-tuned")
    # the evaluation of the weights that were saved: the pretrained one, or the best epoch
    candidates = [e for e in epochs if e.get("model", "fine-tuned") == kept] or epochs
    # the validation whose weights were saved (a later one within min_gain of it was not kept)
    saved = [e for e in candidates if kept == "fine-tuned" and e.get("step") == state.get("best_step")]
    best = saved[-1] if saved else max(candidates, key=lambda e: selection_score(e, cfg.select_metric), default={})
    seconds = state.get("train_seconds", 0.0)
    metrics = {
        "valid_auc": best.get("valid_auc"), "valid_ndcg@10": best.get("valid_ndcg@10"),
        "best_epoch": best.get("epoch"), "epochs": epochs, "kept": kept, "select_metric": cfg.select_metric,
        "cache_seconds": state.get("cache_seconds"), "steps": state.get("step", 0),
        "train_samples": state.get("samples", 0), "train_lists_available": n_lists,
        "train_seconds": seconds, "resumed_from_steps": state.get("resumed_from", []),
        "train_samples_per_s": state["samples"] / seconds if seconds > 0 else None,
        "valid_requests": int(valid["request_id"].n_unique()) if valid.height else 0,
        "wall_seconds": wall, "config": cfg.to_dict(),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    plot_curves(epochs, out_dir / CURVES_FILE)
    log.info("interest: kept %s weights; %d samples in %.0f s (%s samples/s); valid AUC %.4f",
             kept, metrics["train_samples"], seconds, f"{metrics['train_samples_per_s']:.0f}" if seconds else "-",
             metrics["valid_auc"] if metrics["valid_auc"] is not None else float("nan"))


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Valid AUC / nDCG@10 and train loss per validation step (step 0 = the pretrained start)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e.get("step", 0) for e in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("valid_auc", "valid AUC"), ("valid_ndcg@10", "valid nDCG@10")):
        left.plot(steps, [e.get(key) for e in history], marker="o", label=label)
    left.set_xlabel("step")
    left.legend()
    left.set_title("interest model: validation (step 0 = pretrained)")
    loss = [(e["step"], e["train_loss"]) for e in history if e.get("train_loss") is not None]
    right.plot([s for s, _ in loss], [v for _, v in loss], marker="o", color="tab:red")
    right.set_xlabel("step")
    right.set_title("train loss (mean since the previous validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def zero_shot(cfg: InterestConfig, data: Dataset, train_events: pl.DataFrame, valid_events: pl.DataFrame,
              out_dir: Path, base_vectors: Path | None = None) -> Path:
    """The pretrained encoder without fine-tuning, written like a trained model (for comparison)."""
    from dataclasses import replace

    return run(replace(cfg, max_steps=0), data, train_events, valid_events, out_dir, base_vectors)
