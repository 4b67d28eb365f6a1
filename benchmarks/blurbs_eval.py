"""Zero-shot vs unweighted fine-tune vs click-weighted fine-tune(s) of the blurb generator.

    python benchmarks/blurbs_eval.py --items 64 [--data DATA_DIR] [--out bench_out/blurbs]

On a subset of the synthetic shop (items that were shown in the training period), each variant
runs the real stage (fine-tune in Ray Train, generation in Ray Data, checks) and is compared on
the quality checks, blurbs/s, and an interest score: the cosine between the blurb's embedding and
the mean embedding of the texts the clicking user clicked before (other items, train period).
The embeddings are zero-shot MiniLM (mean pooled, L2-normalised) via transformers, not the
project's fine-tuned interest model, so the score is a proxy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

from models.blurbs import BlurbConfig, run  # noqa: E402
from recsys.dataset import Dataset, load_dataset  # noqa: E402
from recsys.splits import time_split  # noqa: E402
from recsys.synth import SynthConfig, synth  # noqa: E402

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

        from models.blurbs.generator import minilm_dir

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
    """(clicked item in subset, up to 10 earlier clicks of that user on other items)."""
    clicks = train.filter(pl.col("clicked") == 1).sort("ts")
    hist: dict[str, list[str]] = {}
    pairs = []
    for user, item in zip(clicks["user_id"].to_list(), clicks["item_id"].to_list()):
        before = [i for i in hist.get(user, []) if i != item][-10:]
        if item in subset and before:
            pairs.append((item, before))
        hist.setdefault(user, []).append(item)
    rng = np.random.default_rng(seed)
    return [pairs[i] for i in sorted(rng.choice(len(pairs), size=min(k, len(pairs)), replace=False))]


def interest_score(enc: MiniLM, blurbs: pl.DataFrame, item_text: dict[str, str], pairs: list[tuple[str, list[str]]],
                   only_generated: bool) -> float | None:
    shown = dict(zip(blurbs["item_id"], blurbs["blurb"]))
    generated = set(blurbs.filter(pl.col("source") == "generated")["item_id"])
    use = [(i, h) for i, h in pairs if not only_generated or i in generated]
    if not use:
        return None
    hist_ids = sorted({x for _, h in use for x in h})
    hv = dict(zip(hist_ids, enc.encode([item_text[x] for x in hist_ids])))
    bv = enc.encode([shown[i] for i, _ in use])
    users = np.stack([np.mean([hv[x] for x in h], axis=0) for _, h in use])
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    return float(np.mean(np.sum(bv * users, axis=1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="dataset directory (default: the default synthetic shop)")
    ap.add_argument("--items", type=int, default=64, help="items in the compared subset")
    ap.add_argument("--steps", type=int, default=BlurbConfig().steps)
    ap.add_argument("--pairs", type=int, default=400, help="(user, clicked item) pairs for the interest score")
    ap.add_argument("--variants", default="zero-shot,ft-unweighted,ft-ctr-weight")
    ap.add_argument("--generator", default="smollm2")
    ap.add_argument("--out", type=Path, default=Path("bench_out/blurbs"))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-blurbs-cache")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
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
    enc = MiniLM()
    results = {}
    for name in args.variants.split(","):
        t0 = time.perf_counter()
        out = run(replace(base, **VARIANTS[name]), sub, train, args.out / name, args.cache)
        wall = time.perf_counter() - t0
        q = json.loads((out / "quality.json").read_text())
        blurbs = pl.read_parquet(out / "blurbs.parquet")
        results[name] = {
            "stage_s": wall, "blurbs_per_s": q["blurbs_per_s"], "generated_rate": q["generated_rate"],
            "faithfulness_rate": q["faithfulness_rate"], "distinct_1": q["distinct_1"], "distinct_2": q["distinct_2"],
            "mean_words_generated": q["length_generated"].get("mean"),
            "fallback_by_reason": q["fallback_count_by_reason"],
            "interest_shown": interest_score(enc, blurbs, item_text, pairs, only_generated=False),
            "interest_generated_only": interest_score(enc, blurbs, item_text, pairs, only_generated=True),
            "finetune_loss": [q.get("finetune_loss_first"), q.get("finetune_loss_last")],
        }
    src = {"interest_source_text": interest_score(enc, pl.DataFrame({"item_id": list(item_text), "blurb": list(
        item_text.values()), "source": ["generated"] * len(item_text)}), item_text, pairs, only_generated=False)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.json").write_text(json.dumps({"variants": results, **src, "items": subset.height,
                                                          "pairs": len(pairs)}, indent=2) + "\n")
    cols = ["stage_s", "blurbs_per_s", "generated_rate", "faithfulness_rate", "distinct_1", "distinct_2",
            "mean_words_generated", "interest_shown", "interest_generated_only"]
    print(f"{'variant':<15}" + "".join(f"{c[:14]:>15}" for c in cols))
    for name, r in results.items():
        print(f"{name:<15}" + "".join(f"{r[c]:>15.3f}" if isinstance(r[c], float) else f"{str(r[c]):>15}" for c in cols))
        print(f"{'':<15}fallbacks: {r['fallback_by_reason']}  loss: {r['finetune_loss']}")
    print(f"interest of the source text itself: {src['interest_source_text']:.3f} ({len(pairs)} pairs)")


if __name__ == "__main__":
    main()
