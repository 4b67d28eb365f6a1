"""The blurb stage: fine-tune (optional), generate for every item through the cache, check, retry
the items that failed, write.

Fine-tuning (default): the zero-shot base model samples `target_rounds` candidates for up to
`train_items` items; the best passing candidate of each is its target (see finetune.py); LoRA
learns them; the tuned model then writes every item's blurb greedily from a facts-only prompt.
Items whose blurb fails a check are generated again by sampling (`retries` rounds, only those
items); the first candidate passing every check is shown, else the extractive fallback.

Outputs in out_dir: blurbs.parquet (BLURBS_SCHEMA), quality.json, samples.csv.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import polars as pl

from models.blurbs.batch import GeneratorPool, generate_cached, with_text_hash
from models.blurbs.config import BlurbConfig
from models.blurbs.finetune import BUCKETS, NoFinetuneTargets, build_examples, finetune, training_items
from models.blurbs.generator import GeneratorSpec, base_model, make_spec
from models.blurbs.quality import write_quality
from models.blurbs.safety import Rules, catalog_vocab, clean, profanity_scores, review
from recsys.core.dataset import Dataset

log = logging.getLogger(__name__)
BLURBS_SCHEMA = pl.Schema({
    "item_id": pl.String,
    "blurb": pl.String,
    "source": pl.String,  # "generated" | "fallback"
    "flag_reason": pl.String,  # null when the generated blurb passed every check
    "model_version": pl.String,
    "text_hash": pl.String,
})


def rules_for(cfg: BlurbConfig, items: pl.DataFrame) -> Rules:
    """Checks for this catalog: brands and attribute words come from the items' own attributes."""
    brands = set()
    attrs = items["attributes"].to_list() if "attributes" in items.columns else [None] * items.height
    for a in attrs:
        try:
            brand = json.loads(a).get("brand") if a else None
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(brand, str) and brand.strip():
            brands.add(brand.strip().lower())
    cats = items["category"].to_list() if "category" in items.columns else [None] * items.height
    return Rules(tuple(cfg.blocklist), cfg.min_words, cfg.max_words, frozenset(brands), catalog_vocab(attrs, cats))


def _sample_candidates(cfg: BlurbConfig, kind: str, base_dir: Path, base_version: str, train: pl.DataFrame,
                       cache_dir: Path, rules: Rules, pool: GeneratorPool) -> tuple[dict[str, list[str]], dict[str, float]]:
    """item_id -> target_rounds sampled zero-shot candidates (cached like any generation)."""
    hashed = with_text_hash(train.select("item_id", "title", "text"))
    found: dict[str, list[str]] = {i: [] for i in hashed["item_id"]}
    seconds, generated = 0.0, 0.0
    for r in range(cfg.target_rounds):
        spec = make_spec(cfg, kind, base_dir, base_version, None, round_=r + 1, temperature=cfg.target_temperature,
                         rules=rules)
        raw, stats = _generate(cfg, hashed, spec, cache_dir, pool)
        seconds, generated = seconds + stats["generate_s"], generated + stats["cache_misses"]
        by_hash = dict(zip(raw["text_hash"], raw["raw"]))
        for i, h in zip(hashed["item_id"], hashed["text_hash"]):
            if by_hash.get(h) is not None:
                found[i].append(by_hash[h])
    return found, {"target_sampling_s": seconds, "target_generations": generated}


def prepare_generator(cfg: BlurbConfig, items: pl.DataFrame, train_events: pl.DataFrame, cache_dir: Path,
                      rules: Rules, pool: GeneratorPool) -> tuple[GeneratorSpec, dict[str, Any]]:
    """The spec to generate with: zero-shot base, or base + a (cached) fine-tune on this catalog."""
    kind, base_dir, base_version = base_model(cfg, cache_dir)
    zero_shot = make_spec(cfg, kind, base_dir, base_version, None, rules=rules)
    if not cfg.finetune:
        return zero_shot, {}
    train = training_items(items.select("item_id", "title", "text"), train_events, cfg)
    candidates, stats = _sample_candidates(cfg, kind, base_dir, base_version, train, cache_dir, rules, pool)
    try:
        examples = build_examples(items, train_events, cfg, rules, candidates)
        if examples.height < cfg.min_targets:
            raise NoFinetuneTargets(f"only {examples.height} training targets pass the checks (< min_targets={cfg.min_targets})")
    except NoFinetuneTargets as err:  # a catalog the base model cannot describe still gets zero-shot blurbs
        log.warning("blurbs: %s; generating zero-shot", err)
        return zero_shot, stats | {"finetune_skipped": 1.0}
    adapter, key, metrics = finetune(cfg, kind, base_dir, base_version, examples, cache_dir, use_ray=cfg.use_ray)
    bucket = BUCKETS[-1] if cfg.click_weighting == "ctr_token" else None  # ask for the high-CTR style
    return make_spec(cfg, kind, base_dir, base_version, (adapter, key), ctr_bucket=bucket, rules=rules), stats | {
        f"finetune_{k}": v for k, v in metrics.items()} | {"finetune_examples": float(examples.height),
                                                           "finetune_target_rate": examples.height / max(train.height, 1),
                                                           "finetune_targets": examples["target"].head(5).to_list()}


def _generate(cfg: BlurbConfig, todo: pl.DataFrame, spec: GeneratorSpec, cache_dir: Path,
              pool: GeneratorPool) -> tuple[pl.DataFrame, dict[str, float]]:
    return generate_cached(todo, spec, cache_dir, batch_size=cfg.batch_size, use_ray=cfg.use_ray, pool=pool)


def generate_rounds(cfg: BlurbConfig, wanted: pl.DataFrame, specs: list[GeneratorSpec], rules: Rules,
                    cache_dir: Path, pool: GeneratorPool) -> tuple[dict[str, list[str]], dict[str, float]]:
    """text_hash -> candidates: round 0 for every wanted item, each later round only for the items
    whose candidates so far all failed a check."""
    candidates: dict[str, list[str]] = {}
    todo = wanted
    totals = {"generate_s": 0.0, "generations": 0.0, "cache_hits": 0.0, "cache_misses": 0.0, "unique_texts": 0.0}
    for r, spec in enumerate(specs):
        if todo.height == 0:
            break
        raw, stats = _generate(cfg, todo, spec, cache_dir, pool)
        totals["generate_s"] += stats["generate_s"]
        totals["generations"] += stats["cache_misses"]
        totals["cache_hits"] += stats["cache_hits"]
        totals["cache_misses"] += stats["cache_misses"]
        if r == 0:
            totals["unique_texts"] = stats["unique_texts"]
        for h, text in zip(raw["text_hash"], raw["raw"]):
            if text is not None:
                candidates.setdefault(h, []).append(text)
        if r + 1 < len(specs):
            unique = todo.unique("text_hash", maintain_order=True)
            failed = [review(candidates.get(h), t or "", x or "", rules, uncased=spec.uncased).source != "generated"
                      for h, t, x in zip(unique["text_hash"], unique["title"], unique["text"])]
            todo = unique.filter(pl.Series(failed, dtype=pl.Boolean))
            totals[f"retry_{r + 1}_items"] = float(todo.height)
    totals["blurbs_per_s"] = totals["generations"] / totals["generate_s"] if totals["generations"] else 0.0
    return candidates, totals


def review_all(items: pl.DataFrame, candidates: dict[str, list[str]], rules: Rules, uncased: bool) -> pl.DataFrame:
    """items (item_id, title, text, text_hash) + candidates per text hash -> one reviewed row per item."""
    profanity_scores([clean(c, "", rules, uncased) for cands in candidates.values() for c in cands])  # one batch
    rows = []
    for r in items.iter_rows(named=True):
        cands = candidates.get(r["text_hash"])
        v = review(cands, r["title"] or "", r["text"] or "", rules, uncased=uncased)
        first = review(cands[:1], r["title"] or "", r["text"] or "", rules, uncased=uncased) if cands else v
        rows.append({"blurb": v.blurb, "source": v.source, "flag_reason": v.reason, "reasons": list(v.reasons),
                     "first_reasons": list(first.reasons), "attempted": bool(cands), "candidates": len(cands or []),
                     "raw": cands[0] if cands else None})
    verdicts = pl.DataFrame(rows, schema={"blurb": pl.String, "source": pl.String, "flag_reason": pl.String,
                                          "reasons": pl.List(pl.String), "first_reasons": pl.List(pl.String),
                                          "attempted": pl.Boolean, "candidates": pl.Int32, "raw": pl.String})
    return pl.concat([items, verdicts], how="horizontal")


def most_shown(items: pl.DataFrame, train_events: pl.DataFrame, limit: int) -> pl.DataFrame:
    """The `limit` items users saw most in training (ties by id): where a generated blurb is seen."""
    shown = train_events.group_by("item_id").agg(_shown=pl.len())
    ranked = items.join(shown, on="item_id", how="left").with_columns(pl.col("_shown").fill_null(0))
    return ranked.sort(["_shown", "item_id"], descending=[True, False]).head(limit).drop("_shown")


def run(cfg: BlurbConfig, data: Dataset, train_events: pl.DataFrame, out_dir: Path, cache_dir: Path) -> Path:
    """Blurbs for every item of data.items; click signal from train_events only. Returns out_dir."""
    t0 = time.perf_counter()
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cols = [c for c in ("item_id", "title", "text", "category", "attributes") if c in data.items.columns]
    items = with_text_hash(data.items.select(cols))
    rules = rules_for(cfg, items)
    with GeneratorPool(cfg.actors, cfg.actor_cpus) as pool:  # one set of actors for every round (started on first use)
        spec, ft_metrics = prepare_generator(cfg, items, train_events, cache_dir, rules, pool)
        t_ft = time.perf_counter() - t0
        wanted = most_shown(items, train_events, cfg.limit) if cfg.limit else items
        kind, base_dir, base_version = base_model(cfg, cache_dir)
        adapter = (Path(spec.adapter_dir), spec.version.split("+ft-")[1].split("+")[0]) if spec.adapter_dir else None
        specs = [spec] + [make_spec(cfg, kind, base_dir, base_version, adapter, ctr_bucket=spec.ctr_bucket, round_=r,
                                    rules=rules) for r in range(1, cfg.retries + 1)]
        candidates, gen_stats = generate_rounds(cfg, wanted, specs, rules, cache_dir, pool)
    reviewed = review_all(items.select("item_id", "title", "text", "text_hash"), candidates, rules, spec.uncased)
    blurbs = reviewed.with_columns(model_version=pl.lit(spec.version)).select(list(BLURBS_SCHEMA)).cast(
        dict(BLURBS_SCHEMA))  # type: ignore[arg-type]
    blurbs.write_parquet(out_dir / "blurbs.parquet")
    extra = {"model_version": spec.version, "config": cfg.to_dict(), "prepare_s": t_ft,
             "stage_s": time.perf_counter() - t0, **gen_stats, **ft_metrics}
    metrics = write_quality(reviewed, out_dir, cfg.samples, extra, rules)
    log.info("blurbs: %d items, %.0f%% generated, %.0f%% title repeats, distinct-2 %.2f, %.1f s (%.1f blurbs/s)",
             metrics["items"], 100 * metrics["generated_rate"], 100 * metrics["title_repeat_rate"],
             metrics["distinct_2"], metrics["stage_s"], metrics["blurbs_per_s"])
    return out_dir
