"""LightGBM LambdaMART ranker: trained on ranking groups, saved with its feature spec."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from recsys.core.config import RankerConfig

log = logging.getLogger(__name__)
MODEL_FILE, SPEC_FILE = "model.txt", "spec.json"
# routing: a request with at least `threshold` candidates is a catalog job, fewer a page job
JOBS = ("catalog", "page")  # the group shapes of task "mixed", one route each
ROUTE_FEATURE, ROUTE_GROUP = "request_candidates", "request_context"


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


@dataclass
class RoutedRanker:
    """One model per job: a request with at least `threshold` candidates (a whole catalog) is
    scored by routes["catalog"], a smaller one (a page the shop chose) by routes["page"]. A
    request's rows share its candidate count, so one request never mixes two models' scales.
    `features` is the union of the routes' features and the route feature (one matrix serves all)."""

    routes: dict[str, Ranker]
    threshold: float

    def __post_init__(self) -> None:
        if set(self.routes) != set(JOBS):
            raise ValueError(f"a routed ranker needs a catalog and a page route, got {sorted(self.routes)}")
        names = [f for r in self.routes.values() for f in r.features]
        self.features = list(dict.fromkeys([*names, ROUTE_FEATURE]))
        self.groups = list(dict.fromkeys([g for r in self.routes.values() for g in r.groups] + [ROUTE_GROUP]))
        self._columns = {name: np.array([self.features.index(f) for f in r.features]) for name, r in self.routes.items()}

    @property
    def booster(self) -> lgb.Booster:
        """The catalog route's booster (what a single-booster reader, e.g. a signature, gets)."""
        return self.routes["catalog"].booster

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ValueError(f"ranker needs feature column(s) {missing}")
        return frame.select(pl.col(f).cast(pl.Float64) for f in self.features).to_numpy()

    def route_of(self, values: np.ndarray) -> np.ndarray:
        """Per row: True = the catalog route."""
        column = values[:, self.features.index(ROUTE_FEATURE)]
        return np.where(np.isnan(column), 0.0, column) >= self.threshold  # missing counts as 0

    def _routed(self, values: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(route, its rows' mask) for each route that has rows."""
        catalog = self.route_of(values) if len(values) else np.zeros(0, dtype=bool)
        return [(name, rows) for name, rows in (("catalog", catalog), ("page", ~catalog)) if rows.any()]

    def _inputs(self, values: np.ndarray, name: str, rows: np.ndarray) -> np.ndarray:
        """The route's rows and columns of `values` in one gather (two would copy a batch's matrix
        twice); a route that has every row (a request's rows share one) takes columns only."""
        columns = self._columns[name]
        return values[:, columns] if rows.all() else values[np.ix_(np.flatnonzero(rows), columns)]

    def predict(self, frame: pl.DataFrame | np.ndarray, num_threads: int = 0) -> np.ndarray:
        values = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        out = np.zeros(len(values))
        for name, rows in self._routed(values):
            out[rows] = self.routes[name].predict(self._inputs(values, name, rows), num_threads=num_threads)
        return out

    def contributions(self, frame: pl.DataFrame | np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Per-feature contributions in `features` order (a feature its route does not read: 0),
        last column = bias."""
        values = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        out = np.zeros((len(values), len(self.features) + 1))
        for name, rows in self._routed(values):
            part = self.routes[name].contributions(self._inputs(values, name, rows), num_threads=num_threads)
            out[np.ix_(np.flatnonzero(rows), np.append(self._columns[name], len(self.features)))] = part
        return out

    def save(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        for name, ranker in self.routes.items():
            ranker.save(path / name)
        spec = {"features": self.features, "groups": self.groups, "route_feature": ROUTE_FEATURE,
                "threshold": self.threshold, "routes": {name: name for name in self.routes}}
        (path / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        return path


AnyRanker = Ranker | RoutedRanker


def load_ranker(path: Path) -> AnyRanker:
    """A saved ranker directory: one booster, or a routed pair (spec.json says which)."""
    spec = json.loads((Path(path) / SPEC_FILE).read_text())
    if "routes" in spec:
        return RoutedRanker({name: Ranker.load(Path(path) / sub) for name, sub in spec["routes"].items()}, float(spec["threshold"]))
    return Ranker.load(Path(path))


def is_ranker_dir(path: Path) -> bool:
    return (Path(path) / SPEC_FILE).exists()


def fingerprint(path: Path) -> str:
    """sha256 over a saved ranker's files (what a resumable job checks it still scores with)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.name in (MODEL_FILE, SPEC_FILE)):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def route_threshold(frame: pl.DataFrame) -> float | None:
    """The candidate count between the page and catalog groups of a training frame: the geometric
    mean of the page groups' 90th percentile size and the catalog groups' 10th (of their medians
    when those overlap). None without both shapes."""
    if "shape" not in frame.columns:
        return None
    sizes = frame.group_by("request_id", "shape").len()
    page, catalog = (sizes.filter(pl.col("shape") == s)["len"].cast(pl.Float64) for s in ("page", "catalog"))
    if page.len() == 0 or catalog.len() == 0:
        return None
    low, high = float(page.quantile(0.9) or 0.0), float(catalog.quantile(0.1) or 0.0)
    if low >= high:
        low, high = float(page.median() or 0.0), float(catalog.median() or 0.0)
    return float(np.sqrt(max(low, 1.0) * max(high, 1.0)))


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


def held_out_users(frame: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fit, stop): the rows of a `fraction` of the users (by a seeded hash, so the same users
    every run) and the rest. Whole users go, so no stop group shares a user with a fit group."""
    users = frame.select("user_id").unique().sort("user_id")
    held = users.filter((pl.col("user_id").hash(seed) % 1000) < int(round(fraction * 1000)))
    return frame.join(held, on="user_id", how="anti"), frame.join(held, on="user_id", how="semi")


MIN_STOP_GROUPS = 10


def train(cfg: RankerConfig, train_frame: pl.DataFrame, valid_frame: pl.DataFrame, features: list[str],
          groups: list[str], *, monotone: bool = False) -> tuple[Ranker, dict[str, Any]]:
    """Fit LambdaMART, stopping on the groups of `cfg.stop_fraction` of the training users (the
    valid groups when there are too few); returns the curves too. `monotone`: the score may only
    rise with every feature."""
    params = {
        "objective": cfg.objective,
        "metric": "ndcg",
        "eval_at": [10],  # boosting stops on nDCG@10, what the release gate judges (LightGBM sorts eval_at: with 5 it would stop on @5)
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
    fit, stop, stop_name = train_frame, valid_frame, "valid"
    if cfg.stop_fraction > 0:
        kept, held = held_out_users(train_frame, cfg.stop_fraction, cfg.seed)
        clicked = held.filter(pl.col("label") > 0)["request_id"].n_unique()
        if clicked >= MIN_STOP_GROUPS and kept.height:
            fit, stop, stop_name = kept, held, "held-out users"
    if stop.height == 0:  # nothing to stop on: the training groups themselves (boosts to n_estimators)
        stop, stop_name = fit, "train"
    dtrain = _dataset(fit, features)
    dstop = _dataset(stop, features, reference=dtrain)
    curves: dict[str, Any] = {}
    booster = lgb.train(
        params, dtrain, num_boost_round=cfg.n_estimators, valid_sets=[dtrain, dstop], valid_names=["train", stop_name],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False), lgb.record_evaluation(curves),
                   lgb.log_evaluation(period=50)],
    )
    log.info("ranker: best iteration %d of %d (stopped on %s)", booster.best_iteration, cfg.n_estimators, stop_name)
    info = {"best_iteration": booster.best_iteration, "stopped_on": stop_name, "curves": curves, "params": params,
            "config": asdict(cfg)}
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
