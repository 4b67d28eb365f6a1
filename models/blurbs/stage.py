"""The blurb stage: fine-tune (optional), generate for every item through the cache, check, write.

Outputs in out_dir: blurbs.parquet (BLURBS_SCHEMA), quality.json, samples.csv.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import polars as pl

from recsys.dataset import Dataset
from models.blurbs.batch import generate_cached, with_text_hash
from models.blurbs.config import BlurbConfig
from models.blurbs.finetune import BUCKETS, NoFinetuneTargets, build_examples, finetune
from models.blurbs.generator import GeneratorSpec, base_model, make_spec
from models.blurbs.quality import write_quality
from models.blurbs.safety import Rules, review

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
    """Checks for this catalog: the brand list comes from the items' attributes."""
    brands = set()
    for attrs in items["attributes"].drop_nulls().to_list() if "attributes" in items.columns else []:
        try:
            brand = json.loads(attrs).get("brand")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(brand, str) and brand.strip():
            brands.add(brand.strip().lower())
    return Rules(tuple(cfg.blocklist), cfg.min_words, cfg.max_words, frozenset(brands))


def prepare_generator(cfg: BlurbConfig, items: pl.DataFrame, train_events: pl.DataFrame, cache_dir: Path,
                      rules: Rules) -> tuple[GeneratorSpec, dict[str, float]]:
    """The spec to generate with: zero-shot base, or base + a (cached) fine-tune on this catalog."""
    kind, base_dir, base_version = base_model(cfg, cache_dir)
    if not cfg.finetune:
        return make_spec(cfg, kind, base_dir, base_version, None), {}
    try:
        examples = build_examples(items, train_events, cfg, rules)
    except NoFinetuneTargets as err:  # a catalog of one-line texts still gets (zero-shot) blurbs
        log.warning("blurbs: %s; generating zero-shot", err)
        return make_spec(cfg, kind, base_dir, base_version, None), {"finetune_skipped": 1.0}
    adapter, key, metrics = finetune(cfg, kind, base_dir, base_version, examples, cache_dir, use_ray=cfg.use_ray)
    bucket = BUCKETS[-1] if cfg.click_weighting == "ctr_token" else None  # ask for the high-CTR style
    return make_spec(cfg, kind, base_dir, base_version, (adapter, key), ctr_bucket=bucket), {
        f"finetune_{k}": v for k, v in metrics.items()} | {"finetune_examples": float(examples.height)}


def review_all(items: pl.DataFrame, raw: pl.DataFrame, rules: Rules, uncased: bool) -> pl.DataFrame:
    """items (item_id, title, text, text_hash) + raw generations -> one reviewed row per item."""
    joined = items.join(raw.select("text_hash", "raw"), on="text_hash", how="left", maintain_order="left")
    rows = []
    for r in joined.iter_rows(named=True):
        v = review(r["raw"], r["title"] or "", r["text"] or "", rules, uncased=uncased)
        rows.append({"blurb": v.blurb, "source": v.source, "flag_reason": v.reason, "reasons": list(v.reasons),
                     "attempted": r["raw"] is not None})
    verdicts = pl.DataFrame(rows, schema={"blurb": pl.String, "source": pl.String, "flag_reason": pl.String,
                                          "reasons": pl.List(pl.String), "attempted": pl.Boolean})
    return pl.concat([joined, verdicts], how="horizontal")


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
    items = with_text_hash(data.items.select("item_id", "title", "text", "attributes"))
    rules = rules_for(cfg, items)
    spec, ft_metrics = prepare_generator(cfg, items, train_events, cache_dir, rules)
    t_ft = time.perf_counter() - t0
    wanted = most_shown(items, train_events, cfg.limit) if cfg.limit else items
    raw, gen_stats = generate_cached(wanted, spec, cache_dir, batch_size=cfg.batch_size, actors=cfg.actors,
                                     actor_cpus=cfg.actor_cpus, use_ray=cfg.use_ray)
    reviewed = review_all(items, raw, rules, spec.uncased)
    blurbs = reviewed.with_columns(model_version=pl.lit(spec.version)).select(list(BLURBS_SCHEMA)).cast(
        dict(BLURBS_SCHEMA))  # type: ignore[arg-type]
    blurbs.write_parquet(out_dir / "blurbs.parquet")
    extra = {"model_version": spec.version, "config": cfg.to_dict(), "prepare_s": t_ft,
             "stage_s": time.perf_counter() - t0, **gen_stats, **ft_metrics}
    metrics = write_quality(reviewed, out_dir, cfg.samples, extra)
    log.info("blurbs: %d items, %.0f%% generated, faithfulness %.3f, %.1f s", metrics["items"],
             100 * metrics["generated_rate"], metrics["faithfulness_rate"] or 0.0, metrics["stage_s"])
    return out_dir
