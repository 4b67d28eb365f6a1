"""Proof that the interest model learns: test AUC / nDCG@10 against zero-shot, popularity, oracle.

    .venv/bin/python benchmarks/interest_eval.py --datasets news,synth,movielens,mind --out runs/interest_eval [--news-seed 11]

`--synth sessions_per_user=20` draws a denser synthetic shop from the same generator (same items,
4x the sessions): the default shop's ~5 sessions per user leave too few clicks per user to learn
from (see the README's ceiling figures).

Each test request's shown items are re-ranked. On the synthetic shop, "attributes (history-only
ceiling)" scores each candidate by how much of the user's history shares its true attributes,
weighted by a fit on the training clicks: roughly the best a model of the history's text can do.
A request's user history = the user's clicks strictly before the request (train + valid + earlier
test clicks). Cold items = items with no impression in the training period; each request is
re-ranked among its cold items only. Also prints training samples/s, scoring pairs/s and the
effect of dynamic int8 quantisation on text encoding.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import polars as pl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from models.interest.config import InterestConfig
from models.interest.samples import request_histories, requests_of, train_lists
from models.interest.scorer import InterestScorer
from models.interest.text import item_texts
from models.interest.train import BASE_VECTORS_FILE, run, zero_shot
from recsys.core.dataset import Dataset, load_dataset
from recsys.core.metrics import mean_with_ci, per_request, summarize
from recsys.core.splits import time_split
from recsys.data.synth import SynthConfig, synth
from recsys.pipeline.baselines import OracleScorer, fit_popularity

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def prepare(name: str, root: Path, synth_cfg: SynthConfig, news_seed: int) -> Dataset:
    out = root / name / "data"
    manifest = out / "manifest.json"
    if name in ("synth", "news") and manifest.exists():
        source = json.loads(manifest.read_text())["source"]
        stale = (source != {"kind": "synth", **asdict(synth_cfg)} if name == "synth"
                 else source.get("seed") != news_seed)
        if stale:  # another --synth or --news-seed: draw it again (models.interest.train.run retrains on it)
            shutil.rmtree(out)
    if not manifest.exists():
        if name == "synth":
            synth(synth_cfg, out)
        elif name == "news":
            from recsys.data.synth_news import NewsConfig, synth_news

            synth_news(NewsConfig(seed=news_seed), out)
        elif name == "movielens":
            from recsys.data.importers.movielens import import_movielens

            import_movielens(SHARED / "movielens-latest-small", out)
        elif name == "mind":
            from recsys.data.importers.mind import import_mind

            mind = SHARED / "mind-sample"
            import_mind(mind / "behaviors.tsv", mind / "news.tsv", out, unknown_items="placeholder")
        else:
            raise SystemExit(f"unknown dataset {name!r}; expected synth, news, movielens or mind")
    return load_dataset(out)


def test_frame(split, history_len: int) -> pl.DataFrame:
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


def attribute_ceiling(data: Dataset, split, frame: pl.DataFrame, cfg: InterestConfig) -> np.ndarray:
    """The room a history-only model has on the synthetic shop: for each true attribute (category,
    colour, style, brand) the share of the user's history that matches the candidate, summed with
    weights fitted on the training clicks (listwise softmax, as the interest model). Text can at
    best recover these attributes; taste drift, appeal and novelty stay out of reach."""
    import torch

    attrs = data.items.select("item_id", "category", pl.col("attributes").str.json_decode(
        pl.Struct({"colour": pl.String, "style": pl.String, "brand": pl.String}))).unnest("attributes")
    row = {item: n for n, item in enumerate(attrs["item_id"].to_list())}
    onehot = [torch.nn.functional.one_hot(torch.from_numpy(
        attrs[c].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64))).float()
        for c in ("category", "colour", "style", "brand")]

    def history_rows(histories: list[list[str]]) -> torch.Tensor:
        out = np.full((len(histories), cfg.history_len), -1, dtype=np.int64)
        for r, h in enumerate(histories):
            ids = [row[i] for i in h if i in row][-cfg.history_len:]
            if ids:
                out[r, -len(ids):] = ids
        return torch.from_numpy(out)

    def matches(hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """(b, h) history rows, (b, c) candidate rows -> (b, c, 4) matching shares"""
        mask = (hist >= 0).float().unsqueeze(-1)
        out = []
        for table in onehot:
            user = (table[hist.clamp_min(0)] * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out.append((user.unsqueeze(1) * table[cand]).sum(-1))
        return torch.stack(out, -1)

    lists = train_lists(split.train, cfg.history_len, cfg.negatives, cfg.seed, None, cfg.fill_history_from_later)
    features = matches(history_rows(lists["history"].to_list()),
                       torch.tensor([[row[i] for i in c] for c in lists["candidates"].to_list()]))
    weights = torch.nn.Parameter(torch.ones(len(onehot)))
    optimizer = torch.optim.Adam([weights], lr=0.01)
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(10):
        for batch in torch.randperm(features.shape[0], generator=generator).split(256):
            logits = features[batch] @ weights
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test = matches(history_rows(frame["history"].to_list()),
                   torch.tensor([[row[i]] for i in frame["item_id"].to_list()]))[:, 0]
    return (test @ weights.detach()).numpy().astype(np.float64)


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


def evaluate(name: str, root: Path, cfg: InterestConfig, synth_cfg: SynthConfig, news_seed: int = 7) -> dict:
    data = prepare(name, root, synth_cfg, news_seed)
    split = time_split(data.events)
    fine = run(cfg, data, split.train, split.valid, root / name / "fine")
    zero = zero_shot(cfg, data, split.train, split.valid, root / name / "zero", base_vectors=fine / BASE_VECTORS_FILE)
    frame = test_frame(split, cfg.history_len)
    scores: dict[str, np.ndarray] = {}
    speed = {}
    for label, out in (("interest (fine-tuned)", fine), ("interest (zero-shot)", zero)):
        scores[label], speed[label] = interest_scores(InterestScorer.load(out), frame)
    scores["popularity"] = fit_popularity(pl.concat([split.train, split.valid])).score(frame)
    if data.ground_truth is not None:
        scores["oracle"] = OracleScorer(data.ground_truth).score(frame)
    if name == "synth":  # the shop's true attributes
        scores["attributes (history-only ceiling)"] = attribute_ceiling(data, split, frame, cfg)
    # cold = never shown in the training period (the model never trained on them); "no impression
    # before test" leaves too few test requests with a click and a non-click among such items
    cold = ~frame["item_id"].is_in(split.train["item_id"].unique().implode()).to_numpy()
    metrics = json.loads((fine / "metrics.json").read_text())
    texts = item_texts(data.items)["item_text"].to_list()[:256]
    report = {
        "dataset": name, "test_impressions": frame.height, "cold_impressions": int(cold.sum()),
        "overall": table(frame, scores), "cold": table(frame, scores, cold),
        "fine_minus_zero": {"overall": paired_gain(frame, scores), "cold": paired_gain(frame, scores, cold)},
        "fine_minus_popularity": {"overall": paired_gain(frame, scores, base="popularity"),
                                  "cold": paired_gain(frame, scores, cold, base="popularity")},
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
    print(f"fine-tuned minus popularity, paired [95% CI]: {report['fine_minus_popularity']}")
    valid = [(e["step"], round(e["valid_auc"], 4), round(e["valid_ndcg@10"], 4), round(e.get("gain_low", 0.0), 4))
             for e in report["valid_epochs"]]
    print(f"kept: {report['kept']}; valid (step, AUC, nDCG@10, lower 95% bound of the paired gain over "
          f"the start) (step 0 = pretrained): {valid}")
    print(f"training: {report['train_samples']} samples at {report['train_samples_per_s']:.2f} samples/s; "
          f"run wall {report['train_wall_seconds']:.0f} s; scoring {report['scoring_pairs_per_s']:,.0f} pairs/s "
          f"(cached item vectors); text encoding {report['quantisation']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="news,synth,movielens,mind")
    parser.add_argument("--out", type=Path, default=Path("runs/interest_eval"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="InterestConfig override, e.g. --set max_train_samples=800")
    parser.add_argument("--synth", action="append", default=[], metavar="KEY=JSON",
                        help="SynthConfig override for the synthetic shop, e.g. --synth sessions_per_user=20")
    parser.add_argument("--mind-max-steps", type=int, default=20, help="MIND only proves the pipeline runs")
    parser.add_argument("--news-seed", type=int, default=7,
                        help="the news analogue's world (the contract benchmark's seeds: 7, 11)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = InterestConfig(**{k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)})
    synth_cfg = SynthConfig(**{k: json.loads(v) for k, v in (s.split("=", 1) for s in args.synth)})
    for name in args.datasets.split(","):
        c = replace(cfg, max_steps=args.mind_max_steps) if name == "mind" else cfg
        show(evaluate(name, args.out, c, synth_cfg, args.news_seed))


if __name__ == "__main__":
    main()
