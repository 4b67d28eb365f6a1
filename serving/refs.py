"""Model references: `models:/NAME@ALIAS`, `models:/NAME/VERSION` (the MLflow registry) or a run directory.

A registered ranker version points at its MLflow run, whose `run_dir` tag names the directory the
pipeline trained in; the service loads that whole run (ranker, feature state, interest model,
blurbs), never an arbitrary pickled object.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from recsys.core.errors import RecsysInputError

REGISTRY_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ResolvedModel:
    ref: str
    run_dir: Path
    name: str | None = None
    version: str | None = None
    alias: str | None = None


def is_registry_ref(ref: str) -> bool:
    return ref.startswith("models:/")


def resolve(ref: str, tracking_uri: str = "") -> ResolvedModel:
    from models.ranker import is_ranker_dir  # lightgbm on demand: parsing a ref stays light

    if not is_registry_ref(ref):
        run_dir = Path(ref).resolve()
        if not is_ranker_dir(run_dir / "ranker"):
            raise RecsysInputError(f"model {ref!r}: {run_dir} is not a trained run directory (no ranker/spec.json)")
        return ResolvedModel(ref, run_dir)
    match = REGISTRY_REF.match(ref)
    if not match:
        raise RecsysInputError(f"model {ref!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION or a run directory")
    from recsys.core.mlstore import tracking_uri as default_uri

    uri = default_uri(tracking_uri)
    _check_store(ref, uri)
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    name, alias = match["name"], match["alias"]
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, match["version"])
    except Exception as err:  # MlflowException: unknown model, alias or version
        raise RecsysInputError(f"model {ref!r} not found in the registry at {mlflow.get_tracking_uri()}: {err}") from None
    run_dir = client.get_run(mv.run_id).data.tags.get("run_dir")
    if not run_dir or not is_ranker_dir(Path(run_dir) / "ranker"):
        raise RecsysInputError(f"model {ref!r} (version {mv.version}): its run directory {run_dir!r} is missing")
    return ResolvedModel(ref, Path(run_dir), name, str(mv.version), alias)



def _local_store(uri: str) -> Path | None:
    """The file or folder a local tracking URI names (sqlite:///…, file:…), else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://").removeprefix("file:"))
    return None


def likely_stores() -> list[Path]:
    """Registries `make demo` leaves: demo/mlflow.db here or beside the code."""
    here = [Path.cwd() / "demo" / "mlflow.db", Path(__file__).resolve().parent.parent / "demo" / "mlflow.db"]
    return list(dict.fromkeys(p.resolve() for p in here if p.is_file()))


def _check_store(ref: str, uri: str) -> None:
    """A registry ref against a local store that does not exist is refused in one line: MLflow
    would create an empty store there and then not find the model in it."""
    store = _local_store(uri)
    if store is None or store.exists():
        return
    store = store.absolute()
    if os.environ.get("MLFLOW_TRACKING_URI"):
        why = f"MLFLOW_TRACKING_URI={os.environ['MLFLOW_TRACKING_URI']} names no existing store ({store} does not exist)"
    else:
        why = f"MLFLOW_TRACKING_URI is not set and the default store {store} does not exist"
    found = likely_stores()
    hint = (f"; the demo's registry is there: MLFLOW_TRACKING_URI=sqlite:///{found[0]}" if found else
            "; set MLFLOW_TRACKING_URI to the store the model was registered in (make demo writes demo/mlflow.db), "
            "or serve a run directory instead")
    raise RecsysInputError(f"model {ref!r}: {why}{hint}")
