"""Proof that the interest model learns: test AUC / nDCG@10 against zero-shot, popularity, oracle.

    .venv/bin/python benchmarks/interest_eval.py --datasets synth,movielens,mind --out runs/interest_eval

Each test request's shown items are re-ranked. A request's user history = the user's clicks
strictly before the request (train + valid + earlier test clicks). Cold items = items with no
impression in the training period; each request is re-ranked among its cold items only. Also prints training samples/s, scoring pairs/s and the
effect of dynamic int8 quantisation on text encoding.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from models.interest.config import InterestConfig  # noqa: E402
from models.interest.samples import request_histories, requests_of  # noqa: E402
from models.interest.scorer import InterestScorer  # noqa: E402
from models.interest.text import item_texts  # noqa: E402
from models.interest.train import run, zero_shot  # noqa: E402
from recsys.baselines import OracleScorer, fit_popularity  # noqa: E402
from recsys.dataset import Dataset, load_dataset  # noqa: E402
from recsys.metrics import mean_with_ci, per_request, summarize  # noqa: E402
from recsys.splits import time_split  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def prepare(name: str, root: Path) -> Dataset:
    out = root / name / "data"
    if not (out / "manifest.json").exists():
        if name == "synth":
            from recsys.synth import SynthConfig, synth

            synth(SynthConfig(), out)
        elif name == "movielens":
            from recsys.importers.movielens import import_movielens

            import_movielens(SHARED / "movielens-latest-small", out)
        elif name == "mind":
            from recsys.importers.mind import import_mind

            mind = SHARED / "mind-sample"
            import_mind(mind / "behaviors.tsv", mind / "news.tsv", out, unknown_items="placeholder")
        else:
            raise SystemExit(f"unknown dataset {name!r}; expected synth, movielens or mind")
    return load_dataset(out)


def test_frame(split, history_len: int) -> pl.DataFrame:  # noqa: ANN001
    context = pl.concat([split.train, split.valid, split.test], how="vertical_relaxed")
    hist = request_histories(requests_of(split.test), context, history_len)
    return split.test.select("request_id", "user_id", "item_id", label=pl.col("clicked")).join(
        hist.select("request_id", "history"), on="request_id")


def interest_scores(scorer: InterestScorer, frame: pl.DataFrame) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scores = scorer.score(frame["history"].to_list(), frame["item_id"].to_list())
    return scores, frame.height / (time.perf_counter() - started)


def table(frame: pl.DataFrame, scores: dict[str, np.ndarray], mask: np.ndarray | None = None) -> list[dict]:
    rows = []
    for name, s in scores.items():
        f = frame.with_columns(score=pl.Series(s, dtype=pl.Float64))
        if mask is not None:
            f = f.filter(pl.Series(mask))
        est = summarize(per_request(f), ("auc", "ndcg@10"), resamples=500)
        rows.append({"model": name, "requests": est["auc"].n,
                     **{m: f"{e.mean:.4f} [{e.low:.3f}, {e.high:.3f}]" for m, e in est.items()}})
    return rows


def paired_gain(frame: pl.DataFrame, scores: dict[str, np.ndarray], mask: np.ndarray | None = None,
                better: str = "interest (fine-tuned)", base: str = "interest (zero-shot)") -> dict:
    """Mean per-request difference better - base with a bootstrap CI over the same requests:
    far tighter than comparing the two separate CIs, since both models rank the same slates."""
    per = {}
    for name in (better, base):
        f = frame.with_columns(score=pl.Series(scores[name], dtype=pl.Float64))
        per[name] = per_request(f.filter(pl.Series(mask)) if mask is not None else f)
    both = per[better].join(per[base], on="request_id", suffix="_base")
    out = {}
    for m in ("auc", "ndcg@10"):
        diff = (both[m] - both[m + "_base"]).drop_nulls().to_numpy()
        e = mean_with_ci(diff, resamples=1000)
        out[m] = f"{e.mean:+.4f} [{e.low:+.4f}, {e.high:+.4f}]"
    return out


def quantisation(scorer_dir: Path, texts: list[str]) -> dict:
    """Text-encoding speed fp32 vs dynamic int8, and how close the int8 vectors stay."""
    out = {}
    vecs = {}
    for q in (False, True):
        s = InterestScorer.load(scorer_dir, quantize=q)
        s.encode_texts(texts[:8])  # load + warm up
        started = time.perf_counter()
        vecs[q] = s.encode_texts(texts)
        out["int8" if q else "fp32"] = len(texts) / (time.perf_counter() - started)
    out["mean_cosine_fp32_vs_int8"] = float((vecs[False] * vecs[True]).sum(1).mean())
    return {"texts_per_s_" + k if k != "mean_cosine_fp32_vs_int8" else k: v for k, v in out.items()}


def evaluate(name: str, root: Path, cfg: InterestConfig) -> dict:
    data = prepare(name, root)
    split = time_split(data.events)
    fine = run(cfg, data, split.train, split.valid, root / name / "fine")
    zero = zero_shot(cfg, data, split.train, split.valid, root / name / "zero")
    frame = test_frame(split, cfg.history_len)
    scores: dict[str, np.ndarray] = {}
    speed = {}
    for label, out in (("interest (fine-tuned)", fine), ("interest (zero-shot)", zero)):
        scores[label], speed[label] = interest_scores(InterestScorer.load(out), frame)
    scores["popularity"] = fit_popularity(pl.concat([split.train, split.valid])).score(frame)
    if data.ground_truth is not None:
        scores["oracle"] = OracleScorer(data.ground_truth).score(frame)
    # cold = never shown in the training period (the model never trained on them); "no impression
    # before test" leaves too few test requests with a click and a non-click among such items
    cold = ~frame["item_id"].is_in(split.train["item_id"].unique().implode()).to_numpy()
    metrics = json.loads((fine / "metrics.json").read_text())
    texts = item_texts(data.items)["item_text"].to_list()[:256]
    report = {
        "dataset": name, "test_impressions": frame.height, "cold_impressions": int(cold.sum()),
        "overall": table(frame, scores), "cold": table(frame, scores, cold),
        "fine_minus_zero": {"overall": paired_gain(frame, scores), "cold": paired_gain(frame, scores, cold)},
        "train_samples_per_s": metrics["train_samples_per_s"], "train_samples": metrics["train_samples"],
        "train_wall_seconds": metrics["wall_seconds"], "valid_epochs": metrics["epochs"],
        "kept": metrics.get("kept"), "cache_seconds": metrics.get("cache_seconds"),
        "scoring_pairs_per_s": speed["interest (fine-tuned)"], "quantisation": quantisation(fine, texts),
    }
    (root / name / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report


def show(report: dict) -> None:
    print(f"\n== {report['dataset']}: {report['test_impressions']} test impressions "
          f"({report['cold_impressions']} on cold items)")
    for part in ("overall", "cold"):
        print(f"-- {part}")
        print(pl.DataFrame(report[part]))
    print(f"fine-tuned minus zero-shot, paired over the same requests [95% CI]: {report['fine_minus_zero']}")
    valid = [(e["step"], round(e["valid_auc"], 4), round(e["valid_ndcg@10"], 4)) for e in report["valid_epochs"]]
    print(f"kept: {report['kept']}; valid (step, AUC, nDCG@10) (step 0 = pretrained): {valid}")
    print(f"training: {report['train_samples']} samples at {report['train_samples_per_s']:.2f} samples/s; "
          f"run wall {report['train_wall_seconds']:.0f} s; scoring {report['scoring_pairs_per_s']:,.0f} pairs/s "
          f"(cached item vectors); text encoding {report['quantisation']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synth,movielens,mind")
    parser.add_argument("--out", type=Path, default=Path("runs/interest_eval"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="InterestConfig override, e.g. --set max_train_samples=800")
    parser.add_argument("--mind-max-steps", type=int, default=20, help="MIND only proves the pipeline runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = InterestConfig(**{k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)})
    for name in args.datasets.split(","):
        c = replace(cfg, max_steps=args.mind_max_steps) if name == "mind" else cfg
        show(evaluate(name, args.out, c))


if __name__ == "__main__":
    main()
