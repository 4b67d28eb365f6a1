"""MLflow at the edge: log a finished run and register its ranker with aliases.

`challenger` always points at the newest version; `champion` moves only when the new version's
test nDCG@10 beats the champion's on the same data (same content hash), or by `recsys models
promote`.

Artifacts live beside the store: an experiment this code creates on `sqlite:///DIR/mlflow.db`
keeps its artifacts (plots, models) in DIR/mlartifacts, not in ./mlruns of whatever directory the
command ran in. The MLflow run starts when the pipeline started (`metrics["started_at"]`), so its
duration is the pipeline's, and it names the dataset it trained on (param `data`, `log_input`
with the dataset's content hash as digest).

On a SQLite store one process logs at a time (a lock file beside the database): two `recsys
train` that finish together would otherwise both create a new store's tables (the second fails,
"duplicate column name") and both read-then-move `champion`. The second waits; past
`STORE_WAIT_SECONDS` it fails with one line. A tracking server serialises writes itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recsys.core.errors import RecsysInputError
from recsys.core.metrics import metric_key
from recsys.core.mlstore import tracking_uri

log = logging.getLogger(__name__)
ARTIFACTS_DIR = "mlartifacts"  # beside a sqlite store's file
STORE_WAIT_SECONDS = float(os.environ.get("RECSYS_MLFLOW_WAIT_SECONDS", "900"))


class StoreBusy(RecsysInputError):
    """Another process kept the MLflow store locked for longer than we wait."""


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: DIR/mlartifacts for `sqlite:///DIR/mlflow.db`
    (relative paths from the working directory, as SQLAlchemy reads them); None (the server's or
    store's own default) for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return (db.resolve().parent / ARTIFACTS_DIR).as_uri()


def open_experiment(name: str, uri: str = "") -> str:
    """The id of experiment `name` on the current tracking store, created with its artifacts
    beside the store when it does not exist yet (an existing experiment keeps its location)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=artifact_location(uri or mlflow.get_tracking_uri()))
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
        else:
            found = client.get_experiment(exp_id)
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    mlflow.set_experiment(experiment_id=found.experiment_id)
    log.info("MLflow experiment %s (%s): artifacts in %s", name, found.experiment_id, found.artifact_location)
    return found.experiment_id


def log_dataset(data_dir: str, data_hash: str, events: Any) -> None:
    """`mlflow.log_input` of the dataset directory: the events table's schema and size, the
    directory as source, the content hash of the whole dataset (every file, manifest.json) as digest."""
    import mlflow
    import mlflow.data

    with warnings.catch_warnings():  # MLflow registers the local-file source twice and warns of it
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_polars(events, source=str(data_dir), name=Path(data_dir).name or str(data_dir),
                                          digest=data_hash)
    mlflow.log_input(dataset, context="training", tags={"data_hash": data_hash, "table": "events"})


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else str(value)
    return out


@contextmanager
def store_lock(uri: str, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold DIR/mlflow.db.lock for a `sqlite:///DIR/mlflow.db` store (no-op for other stores)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock, Timeout

    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    wait = STORE_WAIT_SECONDS if wait_seconds is None else wait_seconds
    lock = FileLock(f"{db}.lock")
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise StoreBusy(f"MLflow store {db} is busy: another run has held {db}.lock for over {wait:.0f} s; "
                        "retry when it has finished (the run directory is complete; only tracking was skipped)") from None
    try:
        yield
    finally:
        lock.release()


def log_run(run_dir: Path, config: dict[str, Any], metrics: dict[str, Any], data_hash: str, sample: Any,
            events: Any = None) -> dict[str, Any]:
    """Log params, metrics, plots and the ranker; register it; return run id, version, aliases.
    `events`: the dataset's events table, logged as the run's input (`mlflow.log_input`).
    One process at a time per SQLite store (`store_lock`)."""
    with store_lock(tracking_uri(config["mlflow"]["tracking_uri"])):
        return _log_run(run_dir, config, metrics, data_hash, sample, events)


def _log_run(run_dir: Path, config: dict[str, Any], metrics: dict[str, Any], data_hash: str, sample: Any,
             events: Any = None) -> dict[str, Any]:
    import mlflow
    import mlflow.lightgbm
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from models.ranker import RoutedRanker, load_ranker

    began = time.perf_counter()
    uri = tracking_uri(config["mlflow"]["tracking_uri"])
    mlflow.set_tracking_uri(uri)
    experiment_id = open_experiment(config["mlflow"]["experiment"], uri)
    name = config["mlflow"]["registered_model"]
    ranker = load_ranker(run_dir / "ranker")
    started_at = metrics.get("started_at")
    # the run begins when the pipeline began, so MLflow's duration is the pipeline's wall time
    created = MlflowClient().create_run(experiment_id, run_name=config["name"],
                                        start_time=int(started_at * 1000) if started_at else None)
    with mlflow.start_run(run_id=created.info.run_id) as run:
        params = _flatten("", {k: v for k, v in config.items() if k != "mlflow"}, {})
        params["data"] = str(metrics.get("data") or params.get("data", ""))  # the directory trained on, not the config's default
        mlflow.log_params({k: v[:500] for k, v in params.items()})
        mlflow.set_tags({"data_hash": data_hash, "run_dir": str(run_dir.resolve()), "task": config["ranker"]["task"]})
        if events is not None and metrics.get("data"):
            log_dataset(metrics["data"], data_hash, events)
        if "total_seconds" in metrics.get("stages", {}):
            mlflow.log_metric("pipeline_seconds", metrics["stages"]["total_seconds"])
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
            for job, lead in metrics["gate"].get("lead", {}).items():  # "lead +0.03 [-0.01, +0.07] over ...: within noise"
                mlflow.set_tag(f"gate_lead_{job}", lead)
        for model, table in metrics["comparison"].items():
            mlflow.log_metric(f"test_ndcg_at_10_{model}", table["ndcg@10"]["mean"])
        _log_interest_curves(run_dir / "interest" / "metrics.json")
        for key, value in metrics.get("stages", {}).items():
            if isinstance(value, (int, float)):
                mlflow.log_metric(f"stage_{metric_key(key)}", value)
        plots = [str(p.relative_to(run_dir)) for p in sorted((run_dir / "ranker").rglob("*"))
                 if p.name in ("curves.png", "importance.png", "importance.csv", "shipped.json")]
        for artefact in ("config.json", "metrics.json", *plots,
                         "blurbs/quality.json", "blurbs/samples.csv", "interest/metrics.json", "interest/curves.png"):
            if (run_dir / artefact).exists():
                mlflow.log_artifact(str(run_dir / artefact), artifact_path=str(Path(artefact).parent) if "/" in artefact else None)
        x = ranker.matrix(sample)
        signature = infer_signature(x, ranker.predict(x))
        if isinstance(ranker, RoutedRanker):  # one model per job: the saved directory behind a pyfunc
            from models.ranker_pyfunc import RoutedRankerModel

            info = mlflow.pyfunc.log_model(
                name="ranker", python_model=RoutedRankerModel(), artifacts={"ranker": str(run_dir / "ranker")},
                signature=signature, pip_requirements=["lightgbm", "polars"], registered_model_name=name,
                code_paths=[str(Path(__file__).resolve().parents[2] / "models")],
            )
        else:
            info = mlflow.lightgbm.log_model(ranker.booster, name="ranker", signature=signature,
                                             pip_requirements=["lightgbm"], registered_model_name=name)
    version = str(info.registered_model_version)
    aliases = update_aliases(name, version, metrics["ranker"]["test"]["ndcg@10"]["mean"], data_hash)
    return {"run_id": run.info.run_id, "model": name, "version": version, "aliases": aliases,
            "experiment_id": experiment_id, "tracking_uri": uri, "seconds": round(time.perf_counter() - began, 2)}


def _log_interest_curves(path: Path) -> None:
    """The interest model's learning, one MLflow point per validation (step 0 = pretrained)."""
    import mlflow

    if not path.exists():
        return
    history = json.loads(path.read_text()).get("epochs", [])
    for entry in history:
        for key in ("valid_auc", "valid_ndcg@10", "train_loss"):
            value = entry.get(key)
            if isinstance(value, (int, float)) and value == value:
                mlflow.log_metric(f"interest_{metric_key(key)}", float(value), step=int(entry.get("step", 0)))


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
