"""Which MLflow store: the one fact training (recsys.pipeline.tracking) and serving (models:/
references) share."""

from __future__ import annotations

import os

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(configured: str = "") -> str:
    """The configured store, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
