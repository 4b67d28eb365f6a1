"""`recsys train`: data -> interest -> blurbs -> features -> ranker, into one run directory.

A stage is skipped when the hash of its inputs and its config is unchanged (stages.json), so a
rerun after a config change redoes only what the change touches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import polars as pl

from features.registry import resolve
from recsys.config import BEHAVIOURAL_GROUPS, RunConfig, blurb_config, interest_config
from recsys.dataset import Dataset, content_hash, load_dataset
from recsys.raytools import remote_call
from recsys.splits import time_split
from recsys.stages import Periods, evaluate_frame, features_stage, plan_periods, ranker_stage

log = logging.getLogger(__name__)
STAGES_FILE = "stages.json"


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StageCache:
    """Remembers the input hash each stage last ran with, in run_dir/stages.json."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STAGES_FILE
        self.keys: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.seconds: dict[str, float] = {}

    def run(self, name: str, key: str, output: Path, fn: Callable[[], Any]) -> bool:
        """Run `fn` unless `name` last ran with `key` and `output` exists; True when it ran."""
        if self.keys.get(name) == key and output.exists():
            log.info("stage %s: unchanged (key %s), reusing %s", name, key, output)
            return False
        log.info("stage %s: running (key %s)", name, key)
        start = time.perf_counter()
        fn()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        self.keys[name] = key
        self.path.write_text(json.dumps(self.keys, indent=2, sort_keys=True) + "\n")
        return True


def _write_state(data: Dataset, run_dir: Path) -> None:
    """What scoring needs, inside the run: the catalog and the log as of the end of training."""
    state = run_dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    data.items.write_parquet(state / "items.parquet")
    data.events.write_parquet(state / "log.parquet")


def _run_interest(cfg: RunConfig, data: Dataset, periods: Periods, split_valid: pl.DataFrame, out: Path) -> None:
    from models.interest.train import run as train_interest

    train_events = data.events.filter(pl.col("ts") < periods.interest_end)
    train_interest(interest_config(cfg), data, train_events, split_valid, out)


def _run_blurbs(cfg: RunConfig, data: Dataset, periods: Periods, out: Path, cache_dir: Path) -> None:
    from models.blurbs.stage import run as make_blurbs

    make_blurbs(blurb_config(cfg), data, data.events.filter(pl.col("ts") < periods.valid_start), out, cache_dir)


def baseline_comparison(run_dir: Path, data: Dataset, task: str) -> dict[str, Any]:
    """Single-feature rankers on the same test groups as the ranker: popularity, trend, interest."""
    test = pl.read_parquet(run_dir / "features" / "test.parquet")
    columns = {"popularity": "item_clicks_all", "recent_popularity_7d": "item_clicks_7d", "interest_alone": "interest_score"}
    out = {name: evaluate_frame(test, test[col].fill_null(0.0).to_numpy()) for name, col in columns.items() if col in test.columns}
    if task == "impressions" and data.ground_truth is not None:
        truth = test.join(data.ground_truth.select("request_id", "item_id", "relevance"), on=["request_id", "item_id"], how="left",
                          maintain_order="left")
        out["oracle"] = evaluate_frame(test, truth["relevance"].fill_null(0.0).to_numpy())
    return out


def train(cfg: RunConfig, data_dir: Path, run_dir: Path, *, track: bool = True, cache_dir: Path | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    # absolute paths: Ray workers do not share the driver's working directory
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir).resolve()
    cache_dir = Path(cache_dir).resolve() if cache_dir else run_dir.parent / ".cache" / "blurbs"
    data = load_dataset(data_dir)
    data_hash = content_hash(data.manifest)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    split = time_split(data.events, cfg.split)
    periods = plan_periods(cfg, split, data.events)
    cache = StageCache(run_dir)
    cache.run("state", _key(data_hash), run_dir / "state", lambda: _write_state(data, run_dir))
    split_key = _key(data_hash, asdict(cfg.split), cfg.ranker.task, str(periods))
    interest_key = blurbs_key = "off"
    if cfg.stages.interest:
        # the resolved config, defaults included: a changed default reruns the stage
        interest_key = _key(split_key, asdict(interest_config(cfg)))
        cache.run("interest", interest_key, run_dir / "interest" / "metrics.json",
                  lambda: _run_interest(cfg, data, periods, split.valid, run_dir / "interest"))
    if cfg.stages.blurbs:
        blurbs_key = _key(split_key, asdict(blurb_config(cfg)), interest_key)
        cache.run("blurbs", blurbs_key, run_dir / "blurbs" / "blurbs.parquet",
                  lambda: _run_blurbs(cfg, data, periods, run_dir / "blurbs", cache_dir))
    cfg_json = cfg.to_json()
    features_key = _key(split_key, cfg.features, asdict(cfg.ranker), interest_key, blurbs_key)
    cache.run("features", features_key, run_dir / "features" / "test.parquet",
              lambda: remote_call(features_stage, cfg_json, str(data_dir.resolve()), str(run_dir.resolve())))
    names = [f for g in resolve(cfg.features) for f in g.feature_names]
    results: dict[str, Any] = {}
    cache.run("ranker", _key(features_key, asdict(cfg.ranker)), run_dir / "ranker" / "result.json",
              lambda: _save_result(run_dir / "ranker", remote_call(ranker_stage, cfg_json, str(run_dir.resolve()), names)))
    results["ranker"] = json.loads((run_dir / "ranker" / "result.json").read_text())
    behavioural = [f for g in resolve([n for n in cfg.features if n in BEHAVIOURAL_GROUPS]) for f in g.feature_names]
    comparison = baseline_comparison(run_dir, data, cfg.ranker.task)
    if behavioural and len(behavioural) < len(names):
        cache.run("ranker_no_text", _key(features_key, asdict(cfg.ranker), "no_text"), run_dir / "ranker_no_text" / "result.json",
                  lambda: _save_result(run_dir / "ranker_no_text",
                                       remote_call(ranker_stage, cfg_json, str(run_dir.resolve()), behavioural, "ranker_no_text")))
        comparison["ranker_no_text"] = json.loads((run_dir / "ranker_no_text" / "result.json").read_text())["test"]
    comparison["ranker"] = results["ranker"]["test"]
    metrics = {
        "name": cfg.name,
        "task": cfg.ranker.task,
        "data": str(data_dir),
        "data_hash": data_hash,
        "periods": {k: str(v) for k, v in asdict(periods).items()},
        "ranker": results["ranker"],
        "comparison": comparison,
        "stages": {**{f"{k}_seconds": v for k, v in cache.seconds.items()}, "total_seconds": round(time.perf_counter() - started, 2)},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    if track:
        sample = pl.read_parquet(run_dir / "features" / "valid.parquet").head(50)
        from recsys.tracking import log_run

        metrics["mlflow"] = log_run(run_dir, cfg.to_dict(), metrics, data_hash, sample)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics


def _save_result(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
