"""A routed ranker (models.ranker.RoutedRanker) as an MLflow pyfunc model: the feature matrix
in (columns in the ranker's `features` order), scores out, each row routed by its request's
candidate count exactly as serving routes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np


class RoutedRankerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from models.ranker import load_ranker

        self.ranker = load_ranker(Path(context.artifacts["ranker"]))

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.ranker.predict(np.asarray(model_input, dtype=np.float64))
