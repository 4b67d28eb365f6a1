"""MLflow at the edge: log a finished run and register its ranker with aliases.

`challenger` always points at the newest version; `champion` moves only when the new version's
test nDCG@10 beats the champion's on the same data (same content hash), or by `recsys models
promote`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from recsys.metrics import metric_key

log = logging.getLogger(__name__)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(configured: str = "") -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else str(value)
    return out


def log_run(run_dir: Path, config: dict[str, Any], metrics: dict[str, Any], data_hash: str, sample: Any) -> dict[str, Any]:
    """Log params, metrics, plots and the ranker; register it; return run id, version, aliases."""
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    from models.ranker import Ranker

    mlflow.set_tracking_uri(tracking_uri(config["mlflow"]["tracking_uri"]))
    mlflow.set_experiment(config["mlflow"]["experiment"])
    name = config["mlflow"]["registered_model"]
    ranker = Ranker.load(run_dir / "ranker")
    with mlflow.start_run(run_name=config["name"]) as run:
        mlflow.log_params({k: v[:500] for k, v in _flatten("", {k: v for k, v in config.items() if k != "mlflow"}, {}).items()})
        mlflow.set_tags({"data_hash": data_hash, "run_dir": str(run_dir.resolve()), "task": config["ranker"]["task"]})
        for split in ("valid", "test"):
            for metric, est in metrics["ranker"][split].items():
                if metric.startswith("shape:"):  # per group shape: {metric: estimate}
                    for sub_metric, sub in est.items():
                        mlflow.log_metric(f"{split}_{metric_key(sub_metric)}_{metric[6:]}", sub["mean"])
                else:
                    mlflow.log_metric(f"{split}_{metric_key(metric)}", est["mean"])
        for model, value in metrics.get("gate", {}).get("valid_ndcg@10", {}).items():
            mlflow.log_metric(f"gate_valid_ndcg_at_10_{model}", value)
        if "gate" in metrics:
            mlflow.set_tag("shipped", metrics["gate"]["shipped"])
        for model, table in metrics["comparison"].items():
            mlflow.log_metric(f"test_ndcg_at_10_{model}", table["ndcg@10"]["mean"])
        for key, value in metrics.get("stages", {}).items():
            if isinstance(value, (int, float)):
                mlflow.log_metric(f"stage_{metric_key(key)}", value)
        for artefact in ("config.json", "metrics.json", "ranker/curves.png", "ranker/importance.png", "ranker/importance.csv",
                         "blurbs/quality.json", "blurbs/samples.csv", "interest/metrics.json"):
            if (run_dir / artefact).exists():
                mlflow.log_artifact(str(run_dir / artefact), artifact_path=str(Path(artefact).parent) if "/" in artefact else None)
        x = ranker.matrix(sample)
        info = mlflow.lightgbm.log_model(
            ranker.booster, name="ranker", signature=infer_signature(x, ranker.booster.predict(x)),
            pip_requirements=["lightgbm"], registered_model_name=name,
        )
    version = str(info.registered_model_version)
    aliases = update_aliases(name, version, metrics["ranker"]["test"]["ndcg@10"]["mean"], data_hash)
    return {"run_id": run.info.run_id, "model": name, "version": version, "aliases": aliases}


def update_aliases(name: str, version: str, test_ndcg: float, data_hash: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(name, "challenger", version)
    client.set_model_version_tag(name, version, "test_ndcg_at_10", f"{test_ndcg:.6f}")
    client.set_model_version_tag(name, version, "data_hash", data_hash)
    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except Exception:  # no champion yet
        champion = None
    aliases = ["challenger"]
    if champion is None or (
        champion.tags.get("data_hash") == data_hash and test_ndcg > float(champion.tags.get("test_ndcg_at_10", "-inf"))
    ):
        client.set_registered_model_alias(name, "champion", version)
        aliases.append("champion")
    return aliases


def promote(name: str, version: str, alias: str = "champion", uri: str = "") -> None:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri(uri))
    MlflowClient().set_registered_model_alias(name, alias, version)
