"""Compare finished runs: metrics side by side, paired deltas with bootstrap CIs, a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.core.errors import RecsysInputError
from recsys.core.metrics import mean_with_ci, per_request

COMPARE_METRICS = ("auc", "mrr@10", "ndcg@5", "ndcg@10", "recall@10")


FINISHED_RUN = ("metrics.json", "ranker/spec.json", "features/test.parquet")


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
    from models.ranker import load_ranker

    test = pl.read_parquet(Path(run_dir) / "features" / "test.parquet")
    ranker = load_ranker(Path(run_dir) / model_dir)
    scored = test.select("request_id", "item_id", "label").with_columns(score=pl.Series(ranker.predict(test)))
    return per_request(scored)


def paired_delta_ci(a: np.ndarray, b: np.ndarray, resamples: int = 1000) -> tuple[float, float, float]:
    """Mean of b - a over the same requests, with a percentile bootstrap 95% CI."""
    est = mean_with_ci(b - a, resamples=resamples)
    return est.mean, est.low, est.high


def longest_slate(frame: pl.DataFrame) -> int:
    """Most candidates in one ranking group that has a click (what Recall@k is judged on)."""
    if frame.height == 0:
        return 0
    sizes = frame.group_by("request_id").agg(n=pl.len(), clicked=(pl.col("label") > 0).any()).filter(pl.col("clicked"))
    return int(sizes["n"].max() or 0)


def recall_is_trivial(longest: int, k: int = 10) -> bool:
    """Recall@k is 1 for any order when no judged group has more than k candidates."""
    return longest <= k


def run_longest_slate(run_dir: Path) -> int:
    path = Path(run_dir) / "features" / "test.parquet"
    return longest_slate(pl.read_parquet(path, columns=["request_id", "label"])) if path.exists() else 0


def compare_runs(run_dirs: list[Path], resamples: int = 1000) -> pl.DataFrame:
    """One row per (run, metric): value, CI, and the paired delta vs the first run when both were
    judged on the same test requests (else the delta's CI is null). The first run is the
    reference: its delta columns are null, not a delta of zero. `longest_slate`: the most
    candidates in one of the run's judged test groups (Recall@10 means nothing at <= 10)."""
    if not run_dirs:
        raise RecsysInputError("compare: give at least one run directory")
    for run_dir in run_dirs:  # every one checked before any work
        require_run(run_dir)
    base_dir = run_dirs[0]
    base = per_request_of(base_dir)
    base_metrics = read_metrics(base_dir)
    rows = []
    for n, run_dir in enumerate(run_dirs):
        metrics = read_metrics(run_dir)
        this = per_request_of(run_dir) if n else base
        paired = base.join(this, on="request_id", suffix="_b")
        same_requests = paired.height == base.height == this.height
        longest = run_longest_slate(run_dir)
        for metric in COMPARE_METRICS:
            est = metrics["ranker"]["test"][metric]
            if n == 0:
                delta, low, high = None, None, None
            elif same_requests:
                delta, low, high = paired_delta_ci(paired[metric].to_numpy(), paired[f"{metric}_b"].to_numpy(), resamples)
            else:
                delta, low, high = est["mean"] - base_metrics["ranker"]["test"][metric]["mean"], None, None
            rows.append({"run": str(run_dir), "name": metrics["name"], "metric": metric, "value": est["mean"],
                         "low": est["low"], "high": est["high"], "delta": delta, "delta_low": low, "delta_high": high,
                         "same_requests": same_requests, "longest_slate": longest})
    schema_overrides = {"delta": pl.Float64, "delta_low": pl.Float64, "delta_high": pl.Float64}
    return pl.DataFrame(rows, schema_overrides=schema_overrides)


def compare_wide(table: pl.DataFrame) -> pl.DataFrame:
    """`compare_runs` with one row per run (in the order given): for each metric its value and
    CI, and its delta vs the first run with the paired CI (null for the first run)."""
    runs = table.select("run", "name", "same_requests", "longest_slate").unique("run", maintain_order=True)
    for metric in table["metric"].unique(maintain_order=True).to_list():
        part = table.filter(pl.col("metric") == metric).select(
            "run", *[pl.col(c).alias(f"{metric}{suffix}") for c, suffix in
                     (("value", ""), ("low", "_low"), ("high", "_high"), ("delta", "_delta"),
                      ("delta_low", "_delta_low"), ("delta_high", "_delta_high"))])
        runs = runs.join(part, on="run", how="left", maintain_order="left")
    return runs


def run_labels(runs: list[str], names: list[str]) -> list[str]:
    """One distinct label per run: its name; where names repeat, the name with its directory's
    last part (or the whole directory where those repeat too)."""
    short = [n if names.count(n) == 1 else f"{n} ({Path(r).name})" for r, n in zip(runs, names)]
    return [s if short.count(s) == 1 else f"{n} ({r})" for s, r, n in zip(short, runs, names)]


def plot_comparison(table: pl.DataFrame, path: Path, metric: str = "ndcg@10") -> Path:
    """Each run's test `metric` with its 95% CI (dots and whiskers on an axis fitted to the
    values: no bars, so an axis that does not start at 0 misleads nobody) and, beside it, each
    run's paired delta vs the first run with its CI and the line of no difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.filter(pl.col("metric") == metric)
    labels = run_labels(rows["run"].to_list(), rows["name"].to_list())
    values, low, high = (rows[c].to_numpy().astype(float) for c in ("value", "low", "high"))
    y = np.arange(len(labels))[::-1]
    deltas = rows.slice(1).filter(pl.col("delta").is_not_null())
    panels = 2 if deltas.height else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1.8, 0.55 * len(labels) + 1.4), sharey=True, squeeze=False)
    ax = axes[0][0]
    ax.errorbar(values, y, xerr=np.vstack([values - low, high - values]), fmt="o", capsize=4)
    for v, yy in zip(values, y):
        ax.annotate(f"{v:.3f}", (v, yy), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    span = max(float(np.nanmax(high) - np.nanmin(low)), 1e-3)
    ax.set_xlim(float(np.nanmin(low)) - 0.15 * span, float(np.nanmax(high)) + 0.15 * span)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.grid(axis="x", alpha=0.3)
    pretty = {"ndcg@10": "nDCG@10", "ndcg@5": "nDCG@5", "auc": "AUC", "mrr@10": "MRR@10", "recall@10": "Recall@10"}.get(metric, metric)
    ax.set_xlabel(f"test {pretty}, 95% CI (axis fitted to the values)")
    if panels == 2:
        from matplotlib.ticker import MaxNLocator

        ax2 = axes[0][1]
        dy = y[1:][: deltas.height]
        d, dl, dh = (deltas[c].to_numpy().astype(float) for c in ("delta", "delta_low", "delta_high"))
        has_ci = ~np.isnan(dl)
        ax2.errorbar(d, dy, xerr=np.vstack([np.where(has_ci, d - np.nan_to_num(dl), 0), np.where(has_ci, np.nan_to_num(dh) - d, 0)]),
                     fmt="o", color="tab:orange", capsize=4)
        for v, yy, ci in zip(d, dy, has_ci):
            ax2.annotate(f"{v:+.3f}" + ("" if ci else " (other test set: no CI)"), (v, yy), textcoords="offset points",
                         xytext=(0, 7), ha="center", fontsize=8)
        ax2.axvline(0.0, color="grey", lw=1, ls="--")
        reach = max(float(np.nanmax(np.abs(np.concatenate([d, dl[has_ci], dh[has_ci]])))), 1e-3) * 1.3
        ax2.set_xlim(-reach, reach)
        ax2.xaxis.set_major_locator(MaxNLocator(5))
        ax2.annotate("first run (reference)", (0.0, y[0]), textcoords="offset points", xytext=(4, 0), ha="left",
                     va="center", fontsize=8, color="grey")
        ax2.set_xlabel(f"{pretty} minus the first run, paired 95% CI")
        ax2.grid(axis="x", alpha=0.3)
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
