"""`recsys train`: data -> interest -> blurbs -> features -> ranker, into one run directory.

A stage is skipped when the hash of its inputs and its config is unchanged (stages.json), so a
rerun after a config change redoes only what the change touches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from features.groups import resolve
from models.blurbs.config import blurb_config
from models.interest.config import interest_config
from models.ranker import JOBS, route_threshold
from recsys.core.config import BEHAVIOURAL_GROUPS, RunConfig
from recsys.core.dataset import Dataset, content_hash, load_dataset
from recsys.core.logs import STAGE_START, progress
from recsys.core.metrics import mean_with_ci, per_request
from recsys.core.raytools import remote_call
from recsys.core.splits import time_split
from recsys.pipeline.report import gate_lines
from recsys.pipeline.stages import GROUP_FIELDS, Periods, by_shape, features_stage, plan_periods, ranker_stage, shape_mean

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
        from recsys.pipeline.report import stage_line

        if self.keys.get(name) == key and output.exists():
            log.info("stage %s: unchanged (key %s), reusing %s", name, key, output)
            progress.info("%s", stage_line(name, self.path.parent, None))
            return False
        log.info("stage %s: running (key %s)", name, key)
        progress.info("%s: running", name, extra={STAGE_START: name})
        start = time.perf_counter()
        fn()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        self.keys[name] = key
        self.path.write_text(json.dumps(self.keys, indent=2, sort_keys=True) + "\n")
        progress.info("%s", stage_line(name, self.path.parent, self.seconds[name]))
        return True


def _write_state(data: Dataset, periods: Periods, run_dir: Path) -> None:
    """What scoring needs, inside the run: the catalog, the log as of the end of training, and the
    data's time scale (its "recent" window = the ranker's label horizon)."""
    from features.behavioural import RECENT_US_KEY

    state = run_dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    data.items.write_parquet(state / "items.parquet")
    data.events.write_parquet(state / "log.parquet")
    recent_us = max(int(periods.horizon / timedelta(microseconds=1)), 1)
    (state / "time_scale.json").write_text(json.dumps({RECENT_US_KEY: recent_us, "recent_days": recent_us / 86_400e6}) + "\n")


def _run_interest(cfg: RunConfig, data: Dataset, periods: Periods, split_valid: pl.DataFrame, out: Path) -> None:
    from models.interest.train import BASE_VECTORS_FILE, REPLAY_DIR
    from models.interest.train import run as train_interest

    icfg = interest_config(cfg)
    # the served model learns from every click of the training period...
    train_interest(icfg, data, data.events.filter(pl.col("ts") < periods.valid_start), split_valid, out)
    if periods.interest_end < periods.valid_start:
        # ...and the ranker's training groups, replayed inside that period, are scored by a twin
        # that learnt only from clicks before the first of them: no group's labels were its
        # training targets, so the ranker does not learn to trust an in-sample score
        train_interest(icfg, data, data.events.filter(pl.col("ts") < periods.interest_end), split_valid,
                       out / REPLAY_DIR, base_vectors=out / BASE_VECTORS_FILE)


def _write_topics(run_dir: Path) -> None:
    """Text topics of every catalog item, from the interest model's item vectors."""
    from features.topics import fit_topics
    from models.interest.embed import EMBEDDINGS_FILE, read_embeddings

    ids, vectors = read_embeddings(run_dir / "interest" / EMBEDDINGS_FILE)
    (run_dir / "topics").mkdir(parents=True, exist_ok=True)
    fit_topics(ids, vectors).write_parquet(run_dir / "topics" / "topics.parquet")


def _run_blurbs(cfg: RunConfig, data: Dataset, periods: Periods, out: Path, cache_dir: Path) -> None:
    from models.blurbs.stage import run as make_blurbs

    make_blurbs(blurb_config(cfg), data, data.events.filter(pl.col("ts") < periods.valid_start), out, cache_dir)


# The scorers a user would otherwise run, as single feature columns: the release gate weighs the
# ranker against each on the validation groups, and the run reports them beside it on test.
BASELINES = {
    "popularity": "item_clicks_all",
    "recent_popularity_1d": "item_clicks_1d",
    "recent_popularity_7d": "item_clicks_7d",
    "recent_popularity": "item_clicks_recent",
    "interest_alone": "interest_score",
    "cf_alone": "cf_score",
}


def baseline_comparison(frame: pl.DataFrame, data: Dataset, task: str) -> dict[str, Any]:
    """Single-feature rankers on the same groups as the ranker: popularity, trend, interest, CF."""
    out = {name: by_shape(frame, frame[col].fill_null(0.0).cast(pl.Float64).to_numpy())
           for name, col in BASELINES.items() if col in frame.columns}
    if task == "impressions" and data.ground_truth is not None:
        truth = frame.join(data.ground_truth.select("request_id", "item_id", "relevance"), on=["request_id", "item_id"], how="left",
                           maintain_order="left")
        out["oracle"] = by_shape(frame, truth["relevance"].fill_null(0.0).to_numpy())
    return out


def _train_candidate(cfg_json: str, run_dir: Path, name: str, features: list[str], monotone: bool, routed: float | None) -> None:
    _save_result(run_dir / name, remote_call(ranker_stage, cfg_json, str(run_dir), features, name, monotone, routed))


def stage_keys(cfg: RunConfig, data_hash: str, periods: Periods) -> dict[str, str]:
    """Each stage's cache key: a hash of exactly what the stage reads (stages that do not run are
    absent). The ranker candidates' keys add [ranker] to the features key (see `train`)."""
    split_key = _key(data_hash, asdict(cfg.split), cfg.ranker.task, str(periods))
    keys = {"state": split_key}
    interest_key = blurbs_key = "off"
    if cfg.stages.interest:
        # the resolved config, defaults included: a changed default reruns the stage
        interest_key = keys["interest"] = _key(split_key, asdict(interest_config(cfg)))
        if "user_topic" in cfg.features:
            keys["topics"] = _key(interest_key, "topics")
    if cfg.stages.blurbs:
        blurbs_key = keys["blurbs"] = _key(split_key, asdict(blurb_config(cfg)))  # blurbs read the data, not the interest model
    # the features stage reads only the group-shaping fields of [ranker], not its training knobs
    group_fields = {k: v for k, v in asdict(cfg.ranker).items() if k in GROUP_FIELDS}
    keys["features"] = _key(split_key, cfg.features, group_fields, interest_key, blurbs_key)
    return keys


def train(cfg: RunConfig, data_dir: Path, run_dir: Path, *, track: bool = True, cache_dir: Path | None = None) -> dict[str, Any]:
    started, started_at = time.perf_counter(), time.time()
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
    keys = stage_keys(cfg, data_hash, periods)
    cache.run("state", keys["state"], run_dir / "state" / "time_scale.json", lambda: _write_state(data, periods, run_dir))
    if "interest" in keys:
        cache.run("interest", keys["interest"], run_dir / "interest" / "metrics.json",
                  lambda: _run_interest(cfg, data, periods, split.valid, run_dir / "interest"))
    if "topics" in keys:
        cache.run("topics", keys["topics"], run_dir / "topics" / "topics.parquet", lambda: _write_topics(run_dir))
    if "blurbs" in keys:
        cache.run("blurbs", keys["blurbs"], run_dir / "blurbs" / "blurbs.parquet",
                  lambda: _run_blurbs(cfg, data, periods, run_dir / "blurbs", cache_dir))
    cfg_json = cfg.to_json()
    features_key = keys["features"]
    cache.run("features", features_key, run_dir / "features" / "test.parquet",
              lambda: remote_call(features_stage, cfg_json, str(data_dir.resolve()), str(run_dir.resolve())))
    names = [f for g in resolve(cfg.features) for f in g.feature_names]
    behavioural = [f for g in resolve([n for n in cfg.features if n in BEHAVIOURAL_GROUPS]) for f in g.feature_names]
    valid = pl.read_parquet(run_dir / "features" / "valid.parquet")
    test = pl.read_parquet(run_dir / "features" / "test.parquet")
    baselines_valid = baseline_comparison(valid, data, cfg.ranker.task)
    threshold = None
    if cfg.ranker.routing == "auto":  # one ranker per job when the groups have both shapes
        threshold = route_threshold(pl.read_parquet(run_dir / "features" / "train.parquet", columns=["request_id", "shape"]))
    jobs = JOBS if threshold is not None else (None,)
    # candidates for release, as (features, monotone, routing threshold): the ranker, the ranker
    # without text, the ranker without the blurb features, each job's best baseline on valid, and with two jobs one ranker over every
    # group (a job with few groups can gain from the other job's clicks; the gate decides per job)
    candidates: dict[str, tuple[list[str], bool, float | None]] = {"ranker_full": (names, False, threshold)}
    if threshold is not None:
        candidates["ranker_mixed"] = (names, False, None)
    if behavioural and len(behavioural) < len(names):
        candidates["ranker_no_text"] = (behavioural, False, threshold)
    blurb_features = {f for g in resolve(["blurb"]) for f in g.feature_names} if "blurb" in cfg.features else set()
    if blurb_features:  # blurb features are kept only where they pay on valid; blurbs are written for display anyway
        candidates["ranker_no_blurbs"] = ([f for f in names if f not in blurb_features], False, threshold)
    reference = {b: m for b, m in baselines_valid.items() if b != "oracle"}
    for job in jobs:
        if reference:
            best = max(reference, key=lambda b: job_figure(reference[b], job))
            candidates[f"baseline_{best}"] = ([BASELINES[best]], True, None)
    results: dict[str, Any] = {}
    for cand, (features, monotone, routed) in candidates.items():
        cache.run(cand, _key(features_key, asdict(cfg.ranker), features, monotone, routed), run_dir / cand / "result.json",
                  partial(_train_candidate, cfg_json, run_dir, cand, features, monotone, routed))
        results[cand] = json.loads((run_dir / cand / "result.json").read_text())
    gate = release_gate(results, baselines_valid, jobs, valid_per_request(run_dir, list(candidates), valid))
    if "routes" in gate and len(set(gate["routes"].values())) > 1:
        assert threshold is not None
        _ship_routes(run_dir, gate, threshold, valid, test)
    else:
        _ship(run_dir / gate["shipped"], run_dir / "ranker", gate)
    for line in gate_lines(gate):
        progress.info("ranker: %s", line)
    results["ranker"] = json.loads((run_dir / "ranker" / "result.json").read_text())
    comparison = baseline_comparison(test, data, cfg.ranker.task)
    for cand in candidates:
        comparison[cand] = results[cand]["test"]
    comparison["ranker"] = results["ranker"]["test"]
    metrics = {
        "name": cfg.name,
        "task": cfg.ranker.task,
        "data": str(data_dir),
        "data_hash": data_hash,
        "started_at": started_at,  # unix seconds: the MLflow run starts here
        "periods": {k: str(v) for k, v in asdict(periods).items()},
        "ranker": results["ranker"],
        "gate": gate,
        "baselines_valid": baselines_valid,
        "comparison": comparison,
        "stages": {**{f"{k}_seconds": v for k, v in cache.seconds.items()}, "total_seconds": round(time.perf_counter() - started, 2)},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    if track:
        sample = pl.read_parquet(run_dir / "features" / "valid.parquet").head(50)
        from recsys.pipeline.tracking import log_run

        metrics["mlflow"] = log_run(run_dir, cfg.to_dict(), metrics, data_hash, sample, events=data.events)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics


def job_figure(metrics: dict[str, Any], job: str | None, metric: str = "ndcg@10") -> float:
    """A candidate's validation figure for one job (its groups of that shape); None: the mean over
    shapes (each job counts once)."""
    if job is None:
        return shape_mean(metrics, metric)
    shape = metrics.get(f"shape:{job}")
    return float(shape[metric]["mean"]) if shape and metric in shape else float("nan")


def valid_per_request(run_dir: Path, candidates: list[str], valid: pl.DataFrame) -> pl.DataFrame:
    """nDCG@10 of every candidate and every baseline on each valid request with a click
    (request_id, shape, then one column per name): what the gate's paired intervals resample."""
    from models.ranker import load_ranker

    scores = {name: load_ranker(run_dir / name).predict(valid) for name in candidates}
    scores |= {f"baseline:{b}": valid[col].fill_null(0.0).cast(pl.Float64).to_numpy()
               for b, col in BASELINES.items() if col in valid.columns}
    shapes = valid.select("request_id", shape=pl.col("shape") if "shape" in valid.columns else pl.lit("all")).unique("request_id")
    table = shapes.sort("request_id")
    for name, values in scores.items():
        scored = valid.select("request_id", "item_id", "label").with_columns(score=pl.Series(values, dtype=pl.Float64))
        table = table.join(per_request(scored).select("request_id", pl.col("ndcg@10").alias(name)), on="request_id", how="inner")
    return table


def _lead(per_req: pl.DataFrame | None, job: str | None, pick: str, rival: str) -> str:
    """`lead +0.029 [-0.021, +0.081] over RIVAL on 22 valid requests: within noise`: the pick's
    paired nDCG@10 lead and its bootstrap 95% CI; empty without the per-request table."""
    if per_req is None or pick not in per_req.columns or rival not in per_req.columns:
        return ""
    mine = per_req if job is None else per_req.filter(pl.col("shape") == job)
    if mine.height < 2:
        return ""
    lead = mean_with_ci((mine[pick] - mine[rival]).to_numpy())
    verdict = "clear" if lead.low > 0 else "within noise"
    return (f"lead {lead.mean:+.3f} [{lead.low:+.3f}, {lead.high:+.3f}] over {rival.removeprefix('baseline:')} "
            f"on {lead.n} valid requests: {verdict}")


def release_gate(results: dict[str, Any], baselines_valid: dict[str, Any], jobs: tuple[str | None, ...] = (None,),
                 per_req: pl.DataFrame | None = None) -> dict[str, Any]:
    """Per job (catalog and page requests, or all groups at once), ship the candidate with the
    best validation nDCG@10: the full ranker unless another candidate beats it, and then one
    plain line says so. With `per_req` (valid_per_request), `lead` gives each job's pick's paired
    lead over its closest rival (the best baseline when a ranker ships, else the full ranker) with
    a bootstrap CI: a few dozen valid requests often cannot tell the two apart, and the user
    should know when the choice was a near coin toss (report.gate_lines prints both)."""
    reference = {name: m for name, m in baselines_valid.items() if name != "oracle"}
    picks, parts, by_job, leads = {}, [], {}, {}
    for job in jobs:
        figures = {name: job_figure(r["valid"], job) for name, r in results.items()}
        refs = {name: job_figure(m, job) for name, m in reference.items()}
        by_job[job or "all"] = figures
        pick = max(figures, key=lambda n: (np.nan_to_num(figures[n], nan=-1.0), n == "ranker_full"))
        picks[job] = pick
        what = f"{job} requests: " if job else ""
        best_ref = max(refs, key=lambda n: np.nan_to_num(refs[n], nan=-1.0)) if refs else None
        rival = f"baseline:{best_ref}" if pick.startswith("ranker") else "ranker_full"
        leads[job or "all"] = _lead(per_req, job, pick, rival)  # "" when the table lacks either column
        if pick == "ranker_full":
            text = f"{what}shipping the ranker (valid nDCG@10 {figures[pick]:.4f}"
            parts.append(text + (f"; best baseline {best_ref} {refs[best_ref]:.4f})" if best_ref else ")"))
        else:
            parts.append(f"{what}the ranker (valid nDCG@10 {figures['ranker_full']:.4f}) loses to {pick} "
                         f"({figures[pick]:.4f}); shipping {pick}")
    gate: dict[str, Any] = {
        "valid_ndcg@10": {name: shape_mean(r["valid"]) for name, r in results.items()},
        "baselines_valid_ndcg@10": {name: shape_mean(m) for name, m in reference.items()},
        "line": "release gate: " + "; ".join(parts),
        "lead": {job: text for job, text in leads.items() if text},
    }
    if jobs == (None,):
        gate["shipped"] = picks[None]
    else:
        gate["routes"] = {job: picks[job] for job in jobs if job}
        gate["valid_ndcg@10_by_job"] = by_job
        names = list(dict.fromkeys(gate["routes"].values()))
        gate["shipped"] = names[0] if len(names) == 1 else ", ".join(f"{job}: {n}" for job, n in gate["routes"].items())
    return gate


def _ship(source: Path, target: Path, gate: dict[str, Any]) -> None:
    """run_dir/ranker = the shipped candidate's files (every reader of a run loads ranker/)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    (target / "shipped.json").write_text(json.dumps(gate, indent=2) + "\n")


def _ship_routes(run_dir: Path, gate: dict[str, Any], threshold: float, valid: pl.DataFrame, test: pl.DataFrame) -> None:
    """run_dir/ranker = a routed ranker made of each job's winner (its route of that job, or the
    whole candidate when it has one model), judged again on valid and test."""
    from models.ranker import Ranker, RoutedRanker, load_ranker

    routes: dict[str, Ranker] = {}
    for job, name in gate["routes"].items():
        model = load_ranker(run_dir / name)
        routes[job] = model.routes[job] if isinstance(model, RoutedRanker) else model
    shipped = RoutedRanker(routes, threshold)
    target = run_dir / "ranker"
    if target.exists():
        shutil.rmtree(target)
    shipped.save(target)
    for job, name in gate["routes"].items():  # each route's plots beside it
        source = run_dir / name / job if (run_dir / name / job).is_dir() else run_dir / name
        for plot in ("curves.png", "importance.png", "importance.csv"):
            if (source / plot).exists():
                shutil.copy2(source / plot, target / job / plot)
    features = list(dict.fromkeys(f for name in gate["routes"].values()
                                  for f in json.loads((run_dir / name / "result.json").read_text())["features"]))
    result = {"best_iteration": None, "features": features, "routes": gate["routes"],
              "valid": by_shape(valid, shipped.predict(valid)), "test": by_shape(test, shipped.predict(test))}
    _save_result(target, result)
    (target / "shipped.json").write_text(json.dumps(gate, indent=2) + "\n")


def _save_result(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
