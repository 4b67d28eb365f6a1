"""The training loop each Ray Train worker runs, and the validation it reports.

Each worker runs the frozen lower layers once over every item text the run touches (ItemCache);
a step then runs only the trainable top layer(s). Validation happens at step 0 (the pretrained
start: the bar to beat), every `valid_every` steps and at each epoch's end; the best weights are
kept, or the pretrained ones when nothing beat them. A checkpoint holds model + optimizer state
and the loop position (epoch, batch in epoch, step, validations, best weights), so a killed run
resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from models.interest.config import InterestConfig
from models.interest.model import InterestModel, load_tokenizer, new_encoder, tokenize
from recsys.core.metrics import mean_with_ci, per_request

STATE_FILE, BEST_FILE = "state.pt", "best.pt"


def loss_fn(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Column 0 is the click. listwise: NRMS softmax cross-entropy; bce: each candidate alone.
    (inbatch builds its own columns: `training_loss`.)"""
    if loss in ("listwise", "inbatch"):
        return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)


def inbatch_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Two-tower softmax: each user against every distinct candidate of the batch (all clicks,
    impression negatives and catalog extras). Another sample's click counts as a negative,
    except for a sample with the same history (another click of the same request: not a miss)."""
    cand = inputs["cand_idx"]
    cols = torch.unique(cand)  # candidate positions only: history items must not be negatives
    logits = model(**{**inputs, "cand_idx": cols.expand(cand.shape[0], -1)})
    target = torch.searchsorted(cols, cand[:, 0])
    hist = inputs["hist_idx"]
    same = (hist.unsqueeze(1) == hist.unsqueeze(0)).all(-1) & (cand[:, :1] != cand[:, 0].unsqueeze(0))
    other_click = torch.zeros_like(logits, dtype=torch.bool)
    rows, cols_of = same.nonzero(as_tuple=True)
    other_click[rows, target[cols_of]] = True
    return F.cross_entropy(logits.masked_fill(other_click, -1e4), target)


def training_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor], loss: str) -> torch.Tensor:
    return inbatch_loss(model, inputs) if loss == "inbatch" else loss_fn(model(**inputs), loss)


def with_catalog_negatives(cand: np.ndarray, cache_rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Append `n` random catalog item rows as extra columns shared by the batch (inbatch only:
    the listwise/bce columns are each sample's own impression)."""
    if n == 0:
        return cand
    extra = rng.choice(cache_rows, size=min(n, len(cache_rows)), replace=False)
    return np.concatenate([cand, np.broadcast_to(extra, (cand.shape[0], len(extra)))], axis=1)


def selection_score(metrics: dict[str, float], how: str) -> float:
    """The number that decides the best weights; -inf when undefined (NaN)."""
    auc, ndcg = metrics["valid_auc"], metrics["valid_ndcg@10"]
    value = {"ndcg@10": ndcg, "auc": auc, "mean": (auc + ndcg) / 2}[how]
    return value if value == value else -math.inf


def request_selection_values(per_req: pl.DataFrame, how: str) -> dict[str, float]:
    """request_id -> that request's share of the selection score (requests without an AUC left out)."""
    value = {"ndcg@10": pl.col("ndcg@10"), "auc": pl.col("auc"), "mean": (pl.col("auc") + pl.col("ndcg@10")) / 2}[how]
    rows = per_req.select("request_id", value=value).drop_nulls("value")
    return dict(zip(rows["request_id"].to_list(), rows["value"].to_list()))


def gain_lower_bound(start: dict[str, float], now: dict[str, float], world: int, confidence: float,
                     seed: int) -> float:
    """Lower end of the bootstrap CI of the mean per-request gain of `now` over `start`, paired on
    the same valid requests (gathered from every worker). A mean gain alone is noise on a few
    hundred requests: MovieLens kept fine-tuned weights for a +0.018 valid gain that turned into a
    test loss."""
    diffs = [now[r] - start[r] for r in now if r in start]
    if world > 1:
        gathered: list[list[float] | None] = [None] * world
        torch.distributed.all_gather_object(gathered, diffs)
        diffs = [d for part in gathered for d in (part or [])]
    return mean_with_ci(np.asarray(diffs), confidence=confidence, resamples=1000, seed=seed).low


class ItemCache:
    """The frozen lower part's token states for every item the run touches, computed once.

    Rows are item-table rows; states (n, len, d) are padded to the longest text (<= max_len) and
    trimmed per batch. fp32 unless large (then fp16), so cached vectors match `encode` exactly."""

    def __init__(self, model: InterestModel, tokenizer, texts: list[str], rows: list[int], cfg: InterestConfig) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.pos = np.full(len(texts), -1, dtype=np.int64)
        self.pos[self.rows] = np.arange(len(rows))
        model.eval()
        states, masks = [], []
        for i in range(0, len(rows), cfg.embed_batch_size):
            enc = tokenize(tokenizer, [texts[r] for r in rows[i:i + cfg.embed_batch_size]], cfg.max_len)
            pad = cfg.max_len - enc["input_ids"].shape[1]  # chunks pad to their own longest text
            states.append(F.pad(model.lower_states(**enc), (0, 0, 0, pad)))
            masks.append(F.pad(enc["attention_mask"], (0, pad)))
        dim = model.dim
        self.states = torch.cat(states) if states else torch.zeros((0, cfg.max_len, dim))
        self.mask = torch.cat(masks) if masks else torch.zeros((0, cfg.max_len), dtype=torch.long)
        used = int(self.mask.sum(0).nonzero().max()) + 1 if len(rows) else 1
        self.states, self.mask = self.states[:, :used].contiguous(), self.mask[:, :used].contiguous()
        if self.states.numel() * 4 > 1 << 30:  # > 1 GiB: halve it, at ~1e-3 relative error
            self.states = self.states.half()

    @classmethod
    def from_vectors(cls, n_texts: int, rows: list[int], vectors: np.ndarray) -> ItemCache:
        """The adaptor's cache (no trainable layer): each item's pretrained pooled unit vector as a
        one-token state, which `_pool` maps to itself before the projection."""
        cache = cls.__new__(cls)
        cache.rows = np.asarray(rows, dtype=np.int64)
        cache.pos = np.full(n_texts, -1, dtype=np.int64)
        cache.pos[cache.rows] = np.arange(len(rows))
        cache.states = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).unsqueeze(1)
        cache.mask = torch.ones((len(rows), 1), dtype=torch.long)
        return cache

    def inputs(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, mask) of item rows, trimmed to their longest text."""
        idx = torch.from_numpy(self.pos[rows])
        mask = self.mask[idx]
        used = int(mask.sum(0).nonzero().max()) + 1 if len(rows) else 1
        return self.states[idx, :used].float(), mask[:, :used]

    @torch.no_grad()
    def vectors(self, model: InterestModel, batch_size: int) -> torch.Tensor:
        """(n, d) current unit vectors of every cached item (top layers only, no gradients)."""
        out = [model.encode_states(*self.inputs(self.rows[i:i + batch_size]))
               for i in range(0, len(self.rows), batch_size)]
        return torch.cat(out) if out else torch.zeros((0, model.dim))


def needed_rows(idx: dict[str, np.ndarray], valid: pl.DataFrame, item_index: dict[str, int]) -> list[int]:
    """Item rows the training lists and the validation frame refer to (what the cache holds)."""
    rows = set(idx["hist"][idx["hist"] >= 0].tolist()) | set(idx["cand"].ravel().tolist())
    rows |= {item_index[i] for i in valid["item_id"].to_list() if i in item_index}
    rows |= {item_index[i] for h in valid["history"].to_list() for i in h if i in item_index}
    return sorted(rows)


def batch_inputs(hist: np.ndarray, cand: np.ndarray, cache: ItemCache, bank: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Each distinct item of the batch once: remap item rows to positions in `uniq`. With a
    `bank` (no-gradient vectors of all cached items) only candidates are encoded; histories
    index the bank."""
    if bank is not None:
        uniq, inverse = np.unique(cand.ravel(), return_inverse=True)
        hist_local = np.where(hist >= 0, cache.pos[np.maximum(hist, 0)], -1)
        cand_local = inverse.reshape(cand.shape)
    else:
        uniq, inverse = np.unique(np.concatenate([hist[hist >= 0], cand.ravel()]), return_inverse=True)
        n_hist = int((hist >= 0).sum())
        hist_local = np.full(hist.shape, -1, dtype=np.int64)
        hist_local[hist >= 0] = inverse[:n_hist]
        cand_local = inverse[n_hist:].reshape(cand.shape)
    states, mask = cache.inputs(uniq)
    out = {"states": states, "attention_mask": mask, "hist_idx": torch.from_numpy(hist_local),
           "cand_idx": torch.from_numpy(cand_local)}
    return out if bank is None else {**out, "hist_bank": bank}


@torch.no_grad()
def validate(model: InterestModel, vectors_of: Callable[[list[int]], torch.Tensor], item_index: dict[str, int],
             frame: pl.DataFrame, cfg: InterestConfig) -> pl.DataFrame:
    """Per-request auc/ndcg@10 on `frame` (request_id, item_id, label, history); `vectors_of`
    maps item rows to unit item vectors."""
    model.eval()
    if frame.height == 0:  # e.g. a worker's shard of a tiny validation set
        return per_request(frame.select("request_id", "item_id", "label").with_columns(score=pl.lit(0.0)))
    needed = sorted({item_index[i] for i in frame["item_id"].to_list() if i in item_index}
                    | {item_index[i] for h in frame["history"].to_list() for i in h if i in item_index})
    vecs = vectors_of(needed)
    pos = {row: n for n, row in enumerate(needed)}
    per_req = frame.unique("request_id", maintain_order=True)
    hist = np.full((per_req.height, cfg.history_len), -1, dtype=np.int64)
    for r, h in enumerate(per_req["history"].to_list()):
        ids = [pos[item_index[i]] for i in h if i in item_index][-cfg.history_len:]
        if ids:
            hist[r, -len(ids):] = ids
    mask = torch.from_numpy(hist >= 0)
    users = model.users(vecs[torch.from_numpy(hist).clamp_min(0)], mask)
    users[~mask.any(1)] = 0.0  # no history: no opinion (ties), the scorer's fallback is not learned here
    user_row = dict(zip(per_req["request_id"].to_list(), range(per_req.height)))
    u = users[[user_row[r] for r in frame["request_id"].to_list()]]
    v = vecs[[pos[item_index[i]] for i in frame["item_id"].to_list()]]
    scores = ((u + model.user_offset()) * v).sum(-1).numpy()
    return per_request(frame.select("request_id", "item_id", "label").with_columns(score=pl.Series(scores)))


def summarize_valid(per_req: pl.DataFrame) -> dict[str, float]:
    return {"valid_auc": float(per_req["auc"].drop_nulls().mean() or float("nan")),
            "valid_ndcg@10": float(per_req["ndcg@10"].mean() or float("nan")), "valid_requests": per_req.height}


def worker_threads(cfg: InterestConfig, world: int) -> int:
    """Torch threads of one training worker (cfg.torch_threads when set). The adaptor
    (trainable_layers = 0: the projection and user tower over cached vectors) trains on one thread:
    its matrices are small, so one thread is no slower, and with two the reductions are not bit for
    bit reproducible (news analogue, 2026-12-07: two runs' heads differed by up to 1e-6, the bias by
    1e-3, enough to move the ranker's early stopping and the contract score by 0.02)."""
    if cfg.torch_threads:
        return cfg.torch_threads
    if cfg.trainable_layers == 0:
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, min(world, os.cpu_count() or 1)))


def _shard(frame: pl.DataFrame, rank: int, world: int) -> pl.DataFrame:
    reqs = frame["request_id"].unique().sort()
    mine = reqs.gather(list(range(rank, reqs.len(), world)))
    return frame.filter(pl.col("request_id").is_in(mine.implode()))


def _all_mean(per_req: pl.DataFrame, world: int) -> dict[str, float]:
    """Mean of each metric over every worker's requests (sums and counts all-reduced)."""
    auc = per_req["auc"].drop_nulls()
    sums = torch.tensor([auc.sum(), auc.len(), per_req["ndcg@10"].sum(), per_req.height], dtype=torch.float64)
    if world > 1:
        torch.distributed.all_reduce(sums)
    a, na, g, ng = sums.tolist()
    return {"valid_auc": a / na if na else float("nan"), "valid_ndcg@10": g / ng if ng else float("nan"),
            "valid_requests": int(ng)}


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: config holds cfg (dict), texts, item_index, valid (polars), cache_rows."""
    import ray.train
    import ray.train.torch

    cfg = InterestConfig.from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(worker_threads(cfg, world))
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer()
    model = InterestModel(cfg, new_encoder(cfg))
    model.freeze_lower()
    texts, item_index = config["texts"], config["item_index"]
    valid = _shard(config["valid"], rank, world)
    groups = [{"params": model.item_parameters(), "lr": cfg.lr},
              {"params": model.head_parameters(), "lr": cfg.head_lr, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "batch": 0, "step": 0, "history": [], "best": -math.inf, "bad_epochs": 0,
             "samples": 0, "train_seconds": 0.0, "kept": "pretrained"}
    best_weights = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is None and config.get("resume_dir"):
        ckpt = ray.train.Checkpoint.from_directory(config["resume_dir"])
    started = time.perf_counter()
    if config.get("base_vectors") is not None:  # the adaptor: pretrained vectors computed once
        cache = ItemCache.from_vectors(len(texts), config["cache_rows"], config["base_vectors"])
    else:
        cache = ItemCache(model, tokenizer, texts, config["cache_rows"], cfg)  # before resuming: lower layers are frozen
    state["cache_seconds"] = time.perf_counter() - started
    if ckpt is not None:
        with ckpt.as_directory() as d:
            saved = torch.load(Path(d) / STATE_FILE, weights_only=False)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            state.setdefault("resumed_from", []).append(state["step"])  # evidence of each resume
            if (Path(d) / BEST_FILE).exists():
                best_weights = torch.load(Path(d) / BEST_FILE, weights_only=True)
    ddp = ray.train.torch.prepare_model(model) if world > 1 else model
    shard = ray.train.get_dataset_shard("train")
    max_steps = cfg.max_steps if cfg.max_steps is not None else math.inf

    def evaluate() -> tuple[dict[str, float], dict[str, float]]:
        """(means over every worker's valid requests, this worker's per-request selection values)"""
        vecs = cache.vectors(model, cfg.embed_batch_size)
        per_req = validate(model, lambda rows: vecs[torch.from_numpy(cache.pos[rows])], item_index, valid, cfg)
        return _all_mean(per_req, world), request_selection_values(per_req, cfg.select_metric)

    def save(metrics: dict[str, Any]) -> None:
        if rank != 0:
            ray.train.report(metrics)  # V2: every worker reports; only rank 0 carries the files
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state},
                       Path(d) / STATE_FILE)
            if best_weights is not None:
                torch.save(best_weights, Path(d) / BEST_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    if not state["history"]:
        # The bar to beat: the pretrained model itself. Fine-tuning must improve on it on valid
        # nDCG@10, or the pretrained weights are kept (state["kept"]).
        metrics, state["start_values"] = evaluate()
        state["history"].append({"epoch": -1, "step": 0, "model": "pretrained", **metrics})
        state["best"] = selection_score(metrics, cfg.select_metric)

    def judge() -> None:
        """Validate now; keep these weights when they beat the best so far (the pretrained start
        included) by min_gain and their paired gain over the start is significant (its CI lies
        above 0), else count one more validation without improvement."""
        nonlocal best_weights
        metrics, values = evaluate()
        state["validated_step"] = state["step"]
        score = selection_score(metrics, cfg.select_metric)
        significant = True
        if cfg.gain_confidence > 0:
            # a checkpoint from before this test has no start values: no significant gain then
            low = gain_lower_bound(state.get("start_values", {}), values, world, cfg.gain_confidence, cfg.seed)
            metrics["gain_low"] = low
            significant = low > 0
        train_loss = float(np.mean(losses)) if losses else float("nan")  # since the last validation
        losses.clear()
        seconds = state["train_seconds"]
        state["history"].append({"epoch": state["epoch"], "step": state["step"], "model": "fine-tuned",
                                 "train_loss": train_loss, "train_seconds": seconds,
                                 "samples_per_s": state["samples"] / seconds if seconds > 0 else None, **metrics})
        # patience counts validations without progress, significant or not: a gain takes a few
        # validations to become significant on a few hundred requests, so training goes on meanwhile
        start_score = selection_score(state["history"][0], cfg.select_metric)
        if score > max(state.get("best_raw", start_score), start_score) + cfg.min_gain:
            state["best_raw"], state["bad_epochs"] = score, 0
        else:
            state["bad_epochs"] += 1
        if score > state["best"] + cfg.min_gain and significant:  # these weights are the ones shipped
            state["best"], state["kept"] = score, "fine-tuned"
            state["best_step"] = state["step"]
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    bank = None
    losses: list[float] = []
    budget = cfg.time_budget_s if cfg.time_budget_s is not None else math.inf

    def over_budget() -> bool:
        return state["train_seconds"] + (time.perf_counter() - started) >= budget

    negatives_rng = np.random.default_rng(cfg.seed + 7919 * rank + state["step"])  # resumes draw afresh
    while state["epoch"] < cfg.epochs and state["step"] < max_steps:
        model.train()
        started = time.perf_counter()
        for b, batch in enumerate(shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy")):
            if b < state["batch"]:
                continue  # done before the checkpoint we resumed from
            if state["step"] >= max_steps or over_budget():
                break
            if not cfg.history_grad and (bank is None or state["step"] % cfg.bank_refresh_every == 0):
                bank = cache.vectors(model, cfg.embed_batch_size)  # history vectors, refreshed now and then
                model.train()  # vectors() ran in eval mode (no dropout)
            cand = np.stack(batch["cand"])
            if cfg.loss == "inbatch":
                cand = with_catalog_negatives(cand, cache.rows, cfg.catalog_negatives, negatives_rng)
            inputs = batch_inputs(np.stack(batch["hist"]), cand, cache, bank)
            loss = training_loss(ddp, inputs, cfg.loss)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            state["step"] += 1
            state["batch"] = b + 1
            state["samples"] += len(batch["hist"]) * world
            if cfg.valid_every and state["step"] % cfg.valid_every == 0:
                state["train_seconds"] += time.perf_counter() - started
                judge()
                model.train()
                bank = None  # the vectors moved on
                started = time.perf_counter()
                if state["bad_epochs"] > cfg.patience:
                    break
            if state["step"] % cfg.checkpoint_every == 0:
                state["train_seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                save({"step": state["step"], "epoch": state["epoch"], "loss": float(loss.detach())})
        state["train_seconds"] += time.perf_counter() - started
        bank = None
        if state["step"] > state.get("validated_step", 0):  # else validated mid-epoch at this very step
            judge()
        state["epoch"] += 1
        state["batch"] = 0
        if state["bad_epochs"] > cfg.patience or state["train_seconds"] >= budget:
            state["stopped"] = "early stop" if state["bad_epochs"] > cfg.patience else "time budget"
            state["epoch"] = cfg.epochs  # a resumed run must not train further
        last = state["history"][-1]
        save({"step": state["step"], "epoch": state["epoch"], "valid_auc": last["valid_auc"],
              "valid_ndcg@10": last["valid_ndcg@10"]})
