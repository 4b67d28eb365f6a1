"""LightGBM LambdaMART ranker: trained on ranking groups, saved with its feature spec."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from recsys.config import RankerConfig

log = logging.getLogger(__name__)
MODEL_FILE, SPEC_FILE = "model.txt", "spec.json"


@dataclass
class Ranker:
    booster: lgb.Booster
    features: list[str]
    groups: list[str]
    # a baseline shipped as the scorer: the score is this feature's value (missing = 0), exactly
    # as the baseline ranked on validation; the booster beside it is its monotone fit (MLflow)
    passthrough: str | None = None

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ValueError(f"ranker needs feature column(s) {missing}")
        return frame.select(pl.col(f).cast(pl.Float64) for f in self.features).to_numpy()

    def predict(self, frame: pl.DataFrame | np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Scores of feature rows: a frame, or its `matrix` (made once when reused)."""
        values = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        if len(values) == 0:
            return np.zeros(0)
        if self.passthrough is not None:
            return np.nan_to_num(values[:, self.features.index(self.passthrough)].astype(np.float64), nan=0.0)
        return self.booster.predict(values, num_threads=num_threads)

    def contributions(self, frame: pl.DataFrame | np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Per-feature contributions (SHAP-like, last column = bias) for explanations."""
        values = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        if self.passthrough is not None:  # the whole score is the one feature's
            contrib = np.zeros((len(values), len(self.features) + 1))
            contrib[:, self.features.index(self.passthrough)] = self.predict(values)
            return contrib
        return np.asarray(self.booster.predict(values, pred_contrib=True, num_threads=num_threads))

    def save(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(path / MODEL_FILE)
        spec = {"features": self.features, "groups": self.groups, "passthrough": self.passthrough}
        (path / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Ranker:
        spec = json.loads((path / SPEC_FILE).read_text())
        return cls(lgb.Booster(model_file=str(path / MODEL_FILE)), spec["features"], spec["groups"], spec.get("passthrough"))


def shape_weights(frame: pl.DataFrame) -> np.ndarray | None:
    """Per row, a weight that makes each group shape (catalog, page) count as much as the other in
    training however many groups it has (LightGBM takes a ranking group's weight from its rows)."""
    if "shape" not in frame.columns or frame["shape"].n_unique() < 2:
        return None
    groups = frame.select("request_id", "shape").unique()
    per_shape = groups.group_by("shape").len()
    weight = per_shape.select("shape", w=groups.height / (per_shape.height * pl.col("len")))
    return frame.select("shape").join(weight, on="shape", how="left", maintain_order="left")["w"].to_numpy()


def _dataset(frame: pl.DataFrame, features: list[str], reference: lgb.Dataset | None = None) -> lgb.Dataset:
    frame = frame.sort("request_id", maintain_order=True)
    sizes = frame.group_by("request_id", maintain_order=True).len()["len"].to_numpy()
    x = frame.select(pl.col(f).cast(pl.Float64) for f in features).to_numpy()
    return lgb.Dataset(x, label=frame["label"].to_numpy(), group=sizes, feature_name=features, weight=shape_weights(frame),
                       reference=reference, free_raw_data=False)


def train(cfg: RankerConfig, train_frame: pl.DataFrame, valid_frame: pl.DataFrame, features: list[str],
          groups: list[str], *, monotone: bool = False) -> tuple[Ranker, dict[str, Any]]:
    """Fit LambdaMART with early stopping on the validation groups; returns the curves too.
    `monotone`: the score may only rise with every feature."""
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [5, 10],
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction,
        "lambdarank_truncation_level": 20,
        "seed": cfg.seed,
        "deterministic": True,
        "num_threads": 0,
        "verbose": -1,
    }
    if monotone:
        params["monotone_constraints"] = [1] * len(features)
    dtrain = _dataset(train_frame, features)
    dvalid = _dataset(valid_frame, features, reference=dtrain)
    curves: dict[str, Any] = {}
    booster = lgb.train(
        params, dtrain, num_boost_round=cfg.n_estimators, valid_sets=[dtrain, dvalid], valid_names=["train", "valid"],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False), lgb.record_evaluation(curves),
                   lgb.log_evaluation(period=50)],
    )
    log.info("ranker: best iteration %d of %d", booster.best_iteration, cfg.n_estimators)
    info = {"best_iteration": booster.best_iteration, "curves": curves, "params": params, "config": asdict(cfg)}
    return Ranker(booster, features, groups), info


def plot_curves(curves: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for split, metrics in curves.items():
        for name, values in metrics.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=f"{split} {name}")
    ax.set_xlabel("boosting round")
    ax.set_ylabel("nDCG")
    ax.set_title("LambdaMART learning curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_importance(ranker: Ranker, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = ranker.booster.feature_importance("gain")
    order = np.argsort(gains)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(order))))
    ax.barh(np.array(ranker.features)[order], gains[order])
    ax.set_xlabel("total gain")
    ax.set_title("ranker feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def importance_table(ranker: Ranker) -> pl.DataFrame:
    return pl.DataFrame({
        "feature": ranker.features,
        "gain": ranker.booster.feature_importance("gain").astype(float),
        "splits": ranker.booster.feature_importance("split").astype(int),
    }).sort("gain", descending=True)
