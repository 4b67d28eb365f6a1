"""Feature-group ablations: retrain the ranker without each group, in parallel Ray tasks, on the
features a finished run already computed; logged as child runs under one MLflow parent run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from features.groups import resolve
from recsys.core.config import from_dict
from recsys.core.metrics import metric_key
from recsys.core.mlstore import tracking_uri
from recsys.core.raytools import ensure_ray
from recsys.pipeline.compare import read_metrics, require_run
from recsys.pipeline.stages import ranker_stage

log = logging.getLogger(__name__)


def ablate(run_dir: Path, track: bool = True) -> pl.DataFrame:
    import ray

    require_run(run_dir, ("config.json", "metrics.json", "features/train.parquet", "features/valid.parquet",
                          "features/test.parquet"))
    cfg_json = (run_dir / "config.json").read_text()
    cfg = from_dict(json.loads(cfg_json))
    groups = resolve(cfg.features)
    ensure_ray()
    task = ray.remote(num_cpus=1)(ranker_stage)
    pending = {}
    for group in groups:
        names = [f for g in groups if g.name != group.name for f in g.feature_names]
        if names:
            pending[group.name] = task.remote(cfg_json, str(run_dir.resolve()), names, f"ablations/without_{group.name}")
    results: dict[str, Any] = {"(all groups)": read_metrics(run_dir)["ranker"]}
    results.update({f"without {name}": ray.get(ref) for name, ref in pending.items()})
    rows = [{"variant": variant, **{m: r["test"][m]["mean"] for m in ("auc", "ndcg@10", "recall@10", "mrr@10")},
             "ndcg@10_low": r["test"]["ndcg@10"]["low"], "ndcg@10_high": r["test"]["ndcg@10"]["high"]}
            for variant, r in results.items()]
    table = pl.DataFrame(rows)
    (run_dir / "ablations").mkdir(exist_ok=True)
    table.write_csv(run_dir / "ablations" / "ablations.csv")
    if track:
        _log(cfg.mlflow.experiment, cfg.mlflow.tracking_uri, run_dir, results)
    return table


def _log(experiment: str, uri: str, run_dir: Path, results: dict[str, Any]) -> None:
    import mlflow

    from recsys.pipeline.tracking import open_experiment

    mlflow.set_tracking_uri(tracking_uri(uri))
    open_experiment(experiment, tracking_uri(uri))  # artifacts beside the store
    with mlflow.start_run(run_name=f"ablate {run_dir.name}"):
        mlflow.set_tag("run_dir", str(run_dir.resolve()))
        mlflow.log_artifact(str(run_dir / "ablations" / "ablations.csv"))
        for variant, result in results.items():
            with mlflow.start_run(run_name=variant, nested=True):
                for metric, est in result["test"].items():
                    mlflow.log_metric(f"test_{metric_key(metric)}", est["mean"])
