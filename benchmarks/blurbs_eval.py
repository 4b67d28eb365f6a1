"""Zero-shot vs unweighted fine-tune vs click-weighted fine-tune(s) of the blurb generator.

    python benchmarks/blurbs_eval.py --items 64 [--data DATA_DIR] [--out bench_out/blurbs]

On a subset of the synthetic shop (items clicked in the training period), each variant runs the
real stage (fine-tune in Ray Train, generation in Ray Data, checks) and is compared on the quality
checks, blurbs/s, fine-tune seconds and an interest proxy: the cosine between the blurb's embedding
and the user's embedding, where a user is the mean embedding of the texts of the items they clicked
before (other items, train period), over the (user, clicked item) pairs of the subset. Embeddings
are zero-shot MiniLM (mean pooled, L2-normalised; what the interest stage keeps on the synthetic
shop when fine-tuning does not beat it), so the score is a proxy.

A blurb is shared by every user who clicked its item, so scores are averaged per item first and the
95% bootstrap CIs resample items; differences between variants are paired over the same items.
Scores: `shown` (the blurb a user sees: generated, or the extractive fallback), `raw` (what the
model wrote, normalised, before the checks) and `lift` (shown blurb vs its clickers minus vs the
other users of the sample: does the blurb match the people who clicked it more than anyone?).

Each run uses a fresh generation/adapter cache under OUT/cache (only the converted base model is
shared, from --cache), so blurbs/s and fine-tune seconds are measured, not cache hits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from models.blurbs import BlurbConfig, run
from models.blurbs.batch import read_cache, with_text_hash
from models.blurbs.finetune import training_items
from models.blurbs.safety import fit_length, normalise
from recsys.core.dataset import Dataset, load_dataset
from recsys.core.metrics import mean_with_ci
from recsys.core.raytools import ensure_ray
from recsys.core.splits import time_split
from recsys.data.synth import SynthConfig, synth

VARIANTS = {
    "zero-shot": dict(finetune=False),
    "ft-unweighted": dict(finetune=True, click_weighting="none"),
    "ft-ctr-weight": dict(finetune=True, click_weighting="ctr_weight"),
    "ft-ctr-token": dict(finetune=True, click_weighting="ctr_token"),
}


class MiniLM:
    def __init__(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from models.weights import minilm_dir

        torch.set_num_threads(2)
        self.tok, self.model = AutoTokenizer.from_pretrained(minilm_dir()), AutoModel.from_pretrained(minilm_dir()).eval()

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        for s in range(0, len(texts), 64):
            enc = self.tok(texts[s:s + 64], return_tensors="pt", padding=True, truncation=True, max_length=128)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vec = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(vec, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384))


def click_pairs(train: pl.DataFrame, subset: set[str], k: int, seed: int) -> list[tuple[str, list[str]]]:
    """(clicked item in subset, up to 10 earlier clicks of that user on other items); k = 0: all pairs."""
    clicks = train.filter(pl.col("clicked") == 1).sort("ts")
    hist: dict[str, list[str]] = {}
    pairs = []
    for user, item in zip(clicks["user_id"].to_list(), clicks["item_id"].to_list()):
        before = [i for i in hist.get(user, []) if i != item][-10:]
        if item in subset and before:
            pairs.append((item, before))
        hist.setdefault(user, []).append(item)
    if not k or k >= len(pairs):
        return pairs
    rng = np.random.default_rng(seed)
    return [pairs[i] for i in sorted(rng.choice(len(pairs), size=k, replace=False))]


class InterestProxy:
    """Per-item interest proxy of any text per item, against that item's clicking users."""

    def __init__(self, enc: MiniLM, item_text: dict[str, str], pairs: list[tuple[str, list[str]]]) -> None:
        self.enc = enc
        hist_ids = sorted({x for _, h in pairs for x in h})
        hv = dict(zip(hist_ids, enc.encode([item_text[x] for x in hist_ids])))
        users = np.stack([np.mean([hv[x] for x in h], axis=0) for _, h in pairs])
        self.users = users / np.linalg.norm(users, axis=1, keepdims=True)
        self.pair_items = np.array([i for i, _ in pairs])
        self.items = sorted(set(self.pair_items))  # items with at least one clicking user

    def per_item(self, texts: dict[str, str]) -> dict[str, np.ndarray]:
        """{"score": mean cosine to the item's clickers, "lift": that minus the mean cosine to all other
        users of the sample}, one value per item of self.items (NaN where the item has no text)."""
        have = [i for i in self.items if texts.get(i)]
        vecs = dict(zip(have, self.enc.encode([texts[i] for i in have]))) if have else {}
        score, lift = np.full(len(self.items), np.nan), np.full(len(self.items), np.nan)
        for k, item in enumerate(self.items):
            if item not in vecs:
                continue
            cos = self.users @ vecs[item]
            mine = self.pair_items == item
            score[k] = cos[mine].mean()
            lift[k] = score[k] - cos[~mine].mean()
        return {"score": score, "lift": lift}


def ci(values: np.ndarray) -> dict[str, float]:
    est = mean_with_ci(values, resamples=2000)
    return {"mean": est.mean, "low": est.low, "high": est.high, "n": est.n}


def fmt_ci(e: dict[str, float] | None, digits: int = 3) -> str:
    if not e or e["n"] == 0:
        return "n/a"
    return f"{e['mean']:+.{digits}f} [{e['low']:+.{digits}f}, {e['high']:+.{digits}f}]"


def fresh_cache(run_cache: Path, model_cache: Path, reuse: bool) -> Path:
    """OUT/cache with the (persistent) converted base model linked in; generations/adapters start empty."""
    if not reuse:
        shutil.rmtree(run_cache, ignore_errors=True)
    run_cache.mkdir(parents=True, exist_ok=True)
    (model_cache / "models").mkdir(parents=True, exist_ok=True)
    link = run_cache / "models"
    if not link.exists():
        link.symlink_to((model_cache / "models").resolve(), target_is_directory=True)
    return run_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="dataset directory (default: the default synthetic shop)")
    ap.add_argument("--items", type=int, default=64, help="items in the compared subset")
    ap.add_argument("--steps", type=int, default=BlurbConfig().steps)
    ap.add_argument("--pairs", type=int, default=0, help="(user, clicked item) pairs for the interest proxy (0 = all)")
    ap.add_argument("--variants", default="zero-shot,ft-unweighted,ft-ctr-weight")
    ap.add_argument("--generator", default="smollm2")
    ap.add_argument("--examples", type=int, default=5, help="items whose blurbs are printed side by side")
    ap.add_argument("--out", type=Path, default=Path("bench_out/blurbs"))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-blurbs-cache",
                    help="persistent cache holding the converted base model (models/)")
    ap.add_argument("--reuse-cache", action="store_true",
                    help="keep OUT/cache from the last run (cached adapters/generations: timings are then meaningless)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    if args.data is None:
        args.data = Path(tempfile.gettempdir()) / "recsys-blurbs-shop"
        if not (args.data / "manifest.json").exists():
            synth(SynthConfig(), args.data)
    data = load_dataset(args.data)
    train = time_split(data.events).train
    shown = train.group_by("item_id").agg(pl.col("clicked").sum()).filter(pl.col("clicked") > 0)
    subset = data.items.join(shown.select("item_id"), on="item_id").sort("item_id").sample(
        min(args.items, shown.height), seed=0)
    sub = Dataset(path=data.path, items=subset, events=data.events, manifest=data.manifest)
    item_text = dict(zip(data.items["item_id"], data.items["title"] + ". " + data.items["text"]))
    pairs = click_pairs(train, set(subset["item_id"]), args.pairs, seed=0)
    base = BlurbConfig(generator=args.generator, steps=args.steps, train_items=args.items)
    # absolute: the Ray Train worker does not run in this working directory
    cache = fresh_cache((args.out / "cache").resolve(), args.cache, args.reuse_cache)
    proxy = InterestProxy(MiniLM(), item_text, pairs)
    ensure_ray()  # started once here, so the first variant's blurbs/s does not pay for starting Ray
    hashed = with_text_hash(subset.select("item_id", "title", "text"))
    results: dict[str, dict] = {}
    per_item: dict[str, dict[str, np.ndarray]] = {}
    texts: dict[str, dict[str, dict[str, str]]] = {}
    for name in names:
        t0 = time.perf_counter()
        out = run(replace(base, **VARIANTS[name]), sub, train, args.out / name, cache)
        wall = time.perf_counter() - t0
        q = json.loads((out / "quality.json").read_text())
        blurbs = pl.read_parquet(out / "blurbs.parquet")
        raw = read_cache(cache, q["model_version"]).select("text_hash", "raw")
        raw = hashed.join(raw, on="text_hash", how="left")
        texts[name] = {
            "shown": dict(zip(blurbs["item_id"], blurbs["blurb"])),
            "raw": {i: fit_length(normalise(r), base.max_words) for i, r in zip(raw["item_id"], raw["raw"]) if r},
            "source": dict(zip(blurbs["item_id"], blurbs["source"])),
            "flag": dict(zip(blurbs["item_id"], blurbs["flag_reason"])),
        }
        generated = {i: t for i, t in texts[name]["shown"].items() if texts[name]["source"][i] == "generated"}
        shown_s, raw_s, gen_s = (proxy.per_item(texts[name]["shown"]), proxy.per_item(texts[name]["raw"]),
                                 proxy.per_item(generated))
        per_item[name] = {"shown": shown_s["score"], "raw": raw_s["score"], "lift": shown_s["lift"]}
        lg, ls = q["length_generated"], q["length_shown"]
        results[name] = {
            "stage_s": wall, "prepare_s": q.get("prepare_s"), "finetune_train_s": q.get("finetune_train_s"),
            "generate_s": q.get("generate_s"), "blurbs_per_s": q["blurbs_per_s"],
            "generated_rate": q["generated_rate"], "fallback_rate": q["fallback_rate"],
            "fallback_rate_by_reason": q["fallback_rate_by_reason"], "fallback_by_reason": q["fallback_count_by_reason"],
            "failed_checks_any": q["failed_checks_any"], "faithfulness_rate": q["faithfulness_rate"],
            "first_candidate_pass_rate": q.get("first_candidate_pass_rate"), "title_repeat_rate": q.get("title_repeat_rate"),
            "pii_hits_shown": q.get("pii_hits_shown"), "finetune_examples": q.get("finetune_examples"),
            "distinct_1": q["distinct_1"], "distinct_2": q["distinct_2"],
            "distinct_1_shown": q["distinct_1_shown"], "distinct_2_shown": q["distinct_2_shown"],
            "words_generated": {"mean": lg.get("mean"), "p50": lg.get("p50"), "p10": lg.get("p10"), "p90": lg.get("p90"),
                                "histogram": lg.get("histogram")},
            "words_shown": {"mean": ls.get("mean"), "p50": ls.get("p50")},
            "interest_shown": ci(shown_s["score"]), "interest_raw": ci(raw_s["score"]),
            "interest_generated_only": ci(gen_s["score"]), "interest_lift": ci(shown_s["lift"]),
            "finetune_loss": [q.get("finetune_loss_first"), q.get("finetune_loss_last")],
            "model_version": q["model_version"],
        }
    src = proxy.per_item(item_text)
    reference = {"interest_source_text": ci(src["score"]), "lift_source_text": ci(src["lift"])}
    # Paired differences, item by item, against the click-weighted fine-tune (or the last variant).
    focus = "ft-ctr-weight" if "ft-ctr-weight" in names else names[-1]
    paired = {}
    for other in names:
        if other == focus:
            continue
        paired[f"{focus} - {other}"] = {m: ci(per_item[focus][m] - per_item[other][m]) for m in ("shown", "raw", "lift")}
        same = [texts[focus]["shown"][i] == texts[other]["shown"][i] for i in subset["item_id"]]
        paired[f"{focus} - {other}"]["identical_shown_blurbs"] = float(np.mean(same))
    weights = None
    if "ft-ctr-weight" in names:
        ex = training_items(subset.select("item_id", "title", "text"), train, base)
        w = (ex["ctr"] / ex["ctr"].mean()).to_numpy()  # the loss weights of the ctr_weight fine-tune
        weights = {"n": int(w.size), "min": float(w.min()), "p10": float(np.percentile(w, 10)),
                   "p50": float(np.median(w)), "p90": float(np.percentile(w, 90)), "max": float(w.max())}
    rng = np.random.default_rng(1)
    ids = sorted(subset["item_id"].to_list())
    picked = [ids[i] for i in sorted(rng.choice(len(ids), size=min(args.examples, len(ids)), replace=False))]
    examples = [{"item_id": i, "source": item_text[i], **{
        n: {"shown": texts[n]["shown"][i], "raw": texts[n]["raw"].get(i), "source": texts[n]["source"][i],
            "flag": texts[n]["flag"][i]} for n in names}} for i in picked]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"variants": results, "paired": paired, **reference, "ctr_weights": weights, "items": subset.height,
              "items_with_clicks_in_pairs": len(proxy.items), "pairs": len(pairs), "steps": args.steps,
              "examples": examples}
    (args.out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [{"variant": n, "item_id": i, "shown": texts[n]["shown"][i], "raw": texts[n]["raw"].get(i),
             "source": texts[n]["source"][i], "flag": texts[n]["flag"][i], "text": item_text[i]}
            for n in names for i in subset["item_id"].to_list()]
    pl.DataFrame(rows).write_csv(args.out / "all_blurbs.csv")
    print_report(report, names)


def print_report(report: dict, names: list[str]) -> None:
    res = report["variants"]
    print(f"\n{report['items']} items, {report['pairs']} (user, clicked item) pairs over "
          f"{report['items_with_clicks_in_pairs']} items; {report['steps']} fine-tune steps")
    print("| variant | interest, shown [95% CI] | interest, raw model output | lift vs other users | distinct-1/2 "
          "| faithfulness | generated | fallbacks by reason | words mean / median | blurbs/s | fine-tune s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        r = res[n]
        fb = ", ".join(f"{k} {v:.0%}" for k, v in r["fallback_rate_by_reason"].items()) or "none"
        w = r["words_generated"]
        words = f"{w['mean']:.1f} / {w['p50']:.0f}" if w["mean"] is not None else "n/a"
        ft = f"{r['finetune_train_s']:.0f}" if r["finetune_train_s"] is not None else "-"
        print(f"| {n} | {fmt_ci(r['interest_shown'])} | {fmt_ci(r['interest_raw'])} | {fmt_ci(r['interest_lift'])} "
              f"| {r['distinct_1']:.3f} / {r['distinct_2']:.3f} | {r['faithfulness_rate']:.3f} | {r['generated_rate']:.0%} "
              f"| {fb} | {words} | {r['blurbs_per_s']:.2f} | {ft} |")
    print(f"| (source text itself) | {fmt_ci(report['interest_source_text'])} | | {fmt_ci(report['lift_source_text'])} | | | | | | | |")
    print("\npaired differences over the same items [95% bootstrap CI]:")
    for k, d in report["paired"].items():
        print(f"  {k}: shown {fmt_ci(d['shown'], 4)}  raw {fmt_ci(d['raw'], 4)}  lift {fmt_ci(d['lift'], 4)}  "
              f"identical shown blurbs {d['identical_shown_blurbs']:.0%}")
    for n in names:
        print(f"  {n}: failed checks (any) {res[n]['failed_checks_any']}  loss {res[n]['finetune_loss']}  "
              f"stage {res[n]['stage_s']:.0f} s")
    if report["ctr_weights"]:
        print(f"  ctr_weight example weights: {report['ctr_weights']}")
    print("\nexamples:")
    for ex in report["examples"]:
        print(f"- {ex['item_id']}: {ex['source']}")
        for n in names:
            v = ex[n]
            tag = "" if v["source"] == "generated" else f"  [fallback: {v['flag']}; model wrote: {v['raw']!r}]"
            print(f"    {n}: {v['shown']}{tag}")


if __name__ == "__main__":
    main()
