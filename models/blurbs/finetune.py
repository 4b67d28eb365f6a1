"""Fine-tuning the generator on targets taken from the catalog, with the click signal mixed in.

Targets: the base model's own zero-shot candidates, sampled a few times per training item; the
best one that passes every check (faithful, safe, not the title again, not a sentence copied from
the source) is kept. The fine-tuned generator then writes that kind of blurb from a facts-only
prompt in one greedy pass (self-distillation by rejection sampling). Extractive targets (the
source's first sentences) were tried first and taught copying: distinct-2 0.09. Click signal
(train events only): the item's smoothed CTR either weights its example's loss ("ctr_weight",
weights scaled to mean 1) or enters the prompt as a control line
"Click rate: low|mid|high." ("ctr_token"; generation then asks for "high").
The training loop is a plain function; `finetune` runs it as a one-worker Ray Train job.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.behavioural import smoothed_rate
from models.blurbs.config import FINETUNE_FIELDS, BlurbConfig, digest
from models.blurbs.safety import Rules, clean, content_words, problems

log = logging.getLogger(__name__)
BUCKETS = ("low", "mid", "high")



class NoFinetuneTargets(ValueError):
    """No catalog item yields a training target that passes the checks (too short, unsafe, empty)."""

def smoothed_ctr(item_ids: pl.Series, events: pl.DataFrame, smoothing: float) -> pl.DataFrame:
    """(item_id, views, clicks, ctr): clicks + k * global CTR over views + k; unseen items get the global CTR."""
    global_ctr = float(events["clicked"].cast(pl.Float64).mean() or 0.0) if events.height else 0.0
    counts = events.group_by("item_id").agg(views=pl.len(), clicks=pl.col("clicked").cast(pl.Int64).sum())
    return (
        pl.DataFrame({"item_id": item_ids})
        .join(counts, on="item_id", how="left")
        .with_columns(pl.col("views").fill_null(0), pl.col("clicks").fill_null(0))
        .with_columns(ctr=smoothed_rate(pl.col("clicks"), pl.col("views"), global_ctr, smoothing))
    )


def training_items(items: pl.DataFrame, train_events: pl.DataFrame, cfg: BlurbConfig) -> pl.DataFrame:
    """Up to cfg.train_items items with their smoothed CTR; items that were shown come first (they carry
    a real click signal), in a seeded random order."""
    ctr = smoothed_ctr(items["item_id"], train_events, cfg.ctr_smoothing)
    frame = items.join(ctr, on="item_id", how="left")
    rng = np.random.default_rng(cfg.seed)
    frame = frame.with_columns(_order=pl.Series(rng.random(frame.height))).sort(
        pl.col("views") == 0, "_order").drop("_order")
    return frame.head(cfg.train_items)


def best_candidate(candidates: list[str], title: str, text: str, rules: Rules) -> str | None:
    """The candidate that passes every check (faithful, safe, not the title again, not a copied
    sentence) and adds the most content words beyond the title; None when none passes."""
    source = f"{title}. {text}"
    best, best_new = None, -1
    title_words = set(content_words(title))
    for raw in candidates:
        blurb = clean(raw, source, rules)
        if problems(blurb, source, rules, title):
            continue
        new = len(set(content_words(blurb)) - title_words)
        if new > best_new:
            best, best_new = blurb, new
    return best


def build_examples(items: pl.DataFrame, train_events: pl.DataFrame, cfg: BlurbConfig, rules: Rules,
                   candidates: dict[str, list[str]]) -> pl.DataFrame:
    """(item_id, title, text, target, weight, ctr_bucket) for the training items whose candidates
    (item_id -> the base model's sampled zero-shot blurbs) include one that passes every check."""
    frame = training_items(items.select("item_id", "title", "text"), train_events, cfg)
    rows = []
    for row in frame.iter_rows(named=True):
        target = best_candidate(candidates.get(row["item_id"], []), row["title"] or "", row["text"] or "", rules)
        if target is not None:
            rows.append({**row, "target": target})
    out = pl.DataFrame(rows, schema={**frame.schema, "target": pl.String}) if rows else None
    if out is None:
        raise NoFinetuneTargets("fine-tuning: no training item has a candidate blurb that passes the checks")
    cuts = np.quantile(out["ctr"].to_numpy(), [1 / 3, 2 / 3])
    bucket = [BUCKETS[int(np.searchsorted(cuts, c, side="right"))] for c in out["ctr"].to_numpy()]
    mean_ctr = float(out["ctr"].mean() or 1.0)
    weight = out["ctr"] / mean_ctr if cfg.click_weighting == "ctr_weight" else pl.Series([1.0] * out.height)
    return out.with_columns(
        weight=weight.cast(pl.Float64),
        ctr_bucket=pl.Series(bucket) if cfg.click_weighting == "ctr_token" else pl.lit(None, pl.String),
    ).select("item_id", "title", "text", "target", "weight", "ctr_bucket")


def finetune_key(cfg: BlurbConfig, base_version: str, examples: pl.DataFrame) -> str:
    rows = examples.select("item_id", "target", "weight", "ctr_bucket").rows()
    return digest({"base": base_version, "cfg": {f: getattr(cfg, f) for f in FINETUNE_FIELDS}, "rows": rows})


def _causal_batch(tok: Any, rows: list[dict[str, Any]], max_source: int) -> dict[str, Any]:
    import torch

    from models.blurbs.generator import causal_prompt

    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id  # word-piece tokenizers: [SEP]
    ids, labels = [], []
    for r in rows:
        text = tok.decode(tok(r["text"], add_special_tokens=False)["input_ids"][:max_source])
        p = tok(causal_prompt(tok, r["title"], text, r["ctr_bucket"], compact=True), add_special_tokens=False)["input_ids"]
        t = tok(" " + r["target"] if not getattr(tok, "chat_template", None) else r["target"],
                add_special_tokens=False)["input_ids"] + [eos]
        ids.append(p + t)
        labels.append([-100] * len(p) + t)
    width = max(map(len, ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    return {
        "input_ids": torch.tensor([x + [pad] * (width - len(x)) for x in ids]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
        "labels": torch.tensor([x + [-100] * (width - len(x)) for x in labels]),
    }


def _seq2seq_batch(tok: Any, rows: list[dict[str, Any]], max_source: int, max_target: int) -> dict[str, Any]:
    from models.blurbs.generator import user_message

    enc = tok([user_message(r["title"], r["text"], r["ctr_bucket"]) for r in rows], return_tensors="pt",
              padding=True, truncation=True, max_length=max_source + 48)
    tgt = tok([r["target"] for r in rows], return_tensors="pt", padding=True, truncation=True, max_length=max_target)
    labels = tgt["input_ids"][:, 1:].clone()  # drop [CLS]: the decoder starts from it
    labels[labels == tok.pad_token_id] = -100
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def weighted_loss(logits: Any, labels: Any, weights: Any, shift: bool) -> Any:
    """Per-example mean token loss, times the example's weight, averaged over the batch."""
    import torch.nn.functional as F

    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    tok_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none",
                               ignore_index=-100).view(labels.shape)
    mask = (labels != -100).float()
    per_example = (tok_loss * mask).sum(1) / mask.sum(1).clamp(min=1)
    return (per_example * weights).mean()


def train(params: dict[str, Any], rows: list[dict[str, Any]], out_dir: Path) -> dict[str, float]:
    """Train and save an adapter (causal: LoRA) or a full model (seq2seq) into out_dir; return metrics."""
    import torch

    torch.manual_seed(params["seed"])
    torch.set_num_threads(max(1, int(params.get("threads", 2))))
    kind, base_dir = params["kind"], Path(params["base_dir"])
    if kind == "causal":
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(base_dir)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        lora = LoraConfig(r=params["lora_r"], lora_alpha=params["lora_alpha"], lora_dropout=params["lora_dropout"],
                          target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        lr = params["learning_rate"]
    else:
        from models.blurbs.generator import load_seq2seq

        tok, model = load_seq2seq(base_dir)
        lr = params["seq2seq_learning_rate"]
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(params["seed"])
    order: list[int] = []
    losses, t0 = [], time.perf_counter()
    # at most max_epochs passes over the targets: a few dozen self-chosen targets are memorised
    # (loss 1.9 -> 0.006 in 30 steps over ~10 targets), and a memorised line is written for every item
    steps = min(params["steps"], max(1, -(-int(params.get("max_epochs", 3) * len(rows)) // params["train_batch_size"])))
    for _ in range(steps):
        if len(order) < params["train_batch_size"]:
            order += list(rng.permutation(len(rows)))
        batch_rows = [rows[i] for i in order[: params["train_batch_size"]]]
        del order[: params["train_batch_size"]]
        if kind == "causal":
            batch = _causal_batch(tok, batch_rows, params["max_source_tokens"])
        else:
            batch = _seq2seq_batch(tok, batch_rows, params["max_source_tokens"], params["max_target_tokens"])
        weights = torch.tensor([r["weight"] for r in batch_rows], dtype=torch.float32)
        labels = batch.pop("labels")
        if kind == "seq2seq":
            batch["labels"] = labels  # lets the model build decoder inputs by shifting right
        logits = model(**batch).logits
        loss = weighted_loss(logits, labels, weights, shift=kind == "causal")
        loss.backward()
        optim.step()
        optim.zero_grad()
        losses.append(float(loss.detach()))
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    tail = losses[-max(1, len(losses) // 5):]
    return {"loss_first": losses[0], "loss_last": float(np.mean(tail)), "train_s": time.perf_counter() - t0,
            "steps": float(len(losses))}


def _train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: read the materialised examples, train, report metrics with the checkpoint."""
    import ray.train

    rows = list(ray.train.get_dataset_shard("train").iter_rows())
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(config, rows, Path(tmp))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def finetune(cfg: BlurbConfig, kind: str, base_dir: Path, base_version: str, examples: pl.DataFrame,
             cache_dir: Path, use_ray: bool = True) -> tuple[Path, str, dict[str, float]]:
    """(adapter folder, fine-tune key, metrics); reuses a cached adapter with the same key."""
    key = finetune_key(cfg, base_version, examples)
    dest = Path(cache_dir) / "adapters" / key
    if (dest / "metrics.json").exists():
        import json

        log.info("fine-tune %s: cached adapter reused", key)
        return dest, key, json.loads((dest / "metrics.json").read_text())
    params = {f: getattr(cfg, f) for f in FINETUNE_FIELDS} | {
        "kind": kind, "base_dir": str(base_dir), "threads": cfg.threads_per_actor}
    rows = examples.to_dicts()
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if use_ray:
        metrics = _ray_train(params, rows, tmp, cfg.train_cpus, Path(cache_dir))
    else:
        metrics = train(params, rows, tmp)
    import json

    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log.info("fine-tune %s: %d steps, loss %.3f -> %.3f in %.1f s", key, metrics["steps"], metrics["loss_first"],
             metrics["loss_last"], metrics["train_s"])
    return dest, key, metrics


def _ray_train(params: dict[str, Any], rows: list[dict[str, Any]], dest: Path, cpus: float, cache_dir: Path) -> dict[str, float]:
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from recsys.core.raytools import ensure_ray

    ensure_ray()
    ds = ray.data.from_items(rows).materialize()  # training must not stream from a lazy plan
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=params,
        scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=f"blurbs-ft-{dest.name}", storage_path=str((cache_dir / "ray_train").resolve())),
        datasets={"train": ds},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"blurb fine-tune reported no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as folder:
        shutil.copytree(folder, dest)
    return {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
