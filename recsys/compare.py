"""Compare finished runs: metrics side by side, paired deltas with bootstrap CIs, a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.errors import RecsysInputError
from recsys.metrics import mean_with_ci, per_request

COMPARE_METRICS = ("auc", "mrr@10", "ndcg@5", "ndcg@10", "recall@10")


FINISHED_RUN = ("metrics.json", "ranker/model.txt", "features/test.parquet")


def require_run(run_dir: Path, needs: tuple[str, ...] = FINISHED_RUN) -> Path:
    """`run_dir` if it is a finished `recsys train` run (has `needs`), else one clear error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecsysInputError(f"{run_dir}: no such run directory (`recsys train --run-dir {run_dir}` makes one; "
                               "`ls runs/ demo/runs/` shows those there are)")
    missing = [n for n in needs if not (run_dir / n).exists()]
    if missing:
        raise RecsysInputError(f"{run_dir}: not a finished `recsys train` run (no {', '.join(missing)})")
    return run_dir


def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        raise RecsysInputError(f"{run_dir}: no metrics.json (not a finished `recsys train` run)")
    return json.loads(path.read_text())


def per_request_of(run_dir: Path, model_dir: str = "ranker") -> pl.DataFrame:
    """Per-request test metrics of a run's ranker (recomputed from its saved test features)."""
    from models.ranker import Ranker

    test = pl.read_parquet(Path(run_dir) / "features" / "test.parquet")
    ranker = Ranker.load(Path(run_dir) / model_dir)
    scored = test.select("request_id", "item_id", "label").with_columns(score=pl.Series(ranker.predict(test)))
    return per_request(scored)


def paired_delta_ci(a: np.ndarray, b: np.ndarray, resamples: int = 1000) -> tuple[float, float, float]:
    """Mean of b - a over the same requests, with a percentile bootstrap 95% CI."""
    est = mean_with_ci(b - a, resamples=resamples)
    return est.mean, est.low, est.high


def compare_runs(run_dirs: list[Path], resamples: int = 1000) -> pl.DataFrame:
    """One row per (run, metric): value, CI, and the paired delta vs the first run when both were
    judged on the same test requests (else the delta's CI is null)."""
    if not run_dirs:
        raise RecsysInputError("compare: give at least one run directory")
    for run_dir in run_dirs:  # every one checked before any work
        require_run(run_dir)
    base_dir = run_dirs[0]
    base = per_request_of(base_dir)
    rows = []
    for run_dir in run_dirs:
        metrics = read_metrics(run_dir)
        this = per_request_of(run_dir)
        paired = base.join(this, on="request_id", suffix="_b")
        same_requests = paired.height == base.height == this.height
        for metric in COMPARE_METRICS:
            est = metrics["ranker"]["test"][metric]
            delta, low, high = (
                paired_delta_ci(paired[metric].to_numpy(), paired[f"{metric}_b"].to_numpy(), resamples)
                if same_requests else (est["mean"] - read_metrics(base_dir)["ranker"]["test"][metric]["mean"], None, None)
            )
            rows.append({"run": str(run_dir), "name": metrics["name"], "metric": metric, "value": est["mean"],
                         "low": est["low"], "high": est["high"], "delta": delta, "delta_low": low, "delta_high": high})
    return pl.DataFrame(rows)


def plot_comparison(table: pl.DataFrame, path: Path, metric: str = "ndcg@10") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.filter(pl.col("metric") == metric)
    labels = [f"{n}\n{Path(r).name}" for n, r in zip(rows["name"], rows["run"])]
    values = rows["value"].to_numpy()
    err = np.vstack([values - rows["low"].to_numpy(), rows["high"].to_numpy() - values])
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(labels)), 4))
    ax.bar(range(len(labels)), values, yerr=err, capsize=4)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel(f"test {metric} (95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def comparison_of_run(run_dir: Path) -> pl.DataFrame:
    """The ranker next to the single-feature baselines of one run (from metrics.json)."""
    metrics = read_metrics(run_dir)
    rows = []
    for model, table in metrics["comparison"].items():
        row: dict[str, Any] = {"model": model, "requests": table["ndcg@10"]["n"]}
        for metric in ("auc", "mrr", "ndcg@5", "ndcg@10", "recall@10", "mrr@10"):
            row[metric] = table[metric]["mean"]
            row[f"{metric}_low"] = table[metric]["low"]
            row[f"{metric}_high"] = table[metric]["high"]
        rows.append(row)
    return pl.DataFrame(rows).sort("ndcg@10", descending=True)
