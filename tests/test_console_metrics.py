"""What `recsys train`, `evaluate` and `compare` tell a person (issue 21: points 4, 6, 8), on a
tiny shop trained in this process (the pipeline's Ray tasks run as plain calls: no Ray here)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
BEHAVIOURAL = ROOT / "experiments" / "synthetic_behavioural.toml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two runs of one tiny shop (the first tracked in MLflow), trained without Ray."""
    import recsys.pipeline.train as pipeline
    from recsys.data.synth import SynthConfig, synth
    from recsys.pipeline.configure import load_config

    tmp = tmp_path_factory.mktemp("console")
    synth(SynthConfig(users=120, items=80, days=10, seed=3), tmp / "shop")
    uri = f"sqlite:///{tmp / 'store' / 'mlflow.db'}"
    (tmp / "store").mkdir()
    (tmp / "elsewhere").mkdir()
    base = ["ranker.min_data_in_leaf=5", "ranker.n_estimators=30"]
    remote_call, cwd = pipeline.remote_call, os.getcwd()
    pipeline.remote_call = lambda fn, *args, **kwargs: fn(*args)
    os.chdir(tmp / "elsewhere")  # MLflow used to put artifacts in ./mlruns of the working directory
    try:
        full = pipeline.train(load_config(BEHAVIOURAL, [*base, f"mlflow.tracking_uri='{uri}'"]), tmp / "shop", tmp / "full")
        pop = pipeline.train(load_config(BEHAVIOURAL, [*base, "features=['item_popularity']"]), tmp / "shop", tmp / "pop",
                             track=False)
    finally:
        pipeline.remote_call = remote_call
        os.chdir(cwd)
    return {"tmp": tmp, "uri": uri, "full": full, "pop": pop}


def test_mlflow_run_spans_the_pipeline_names_its_data_and_keeps_artifacts_beside_the_store(runs: dict) -> None:
    import mlflow

    tmp, metrics = runs["tmp"], runs["full"]
    mlflow.set_tracking_uri(runs["uri"])
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("recsys")
    beside = (tmp / "store" / "mlartifacts").resolve().as_uri()
    assert experiment.artifact_location == beside
    run = client.get_run(metrics["mlflow"]["run_id"])
    assert run.info.artifact_uri.startswith(beside)
    assert any((tmp / "store" / "mlartifacts").rglob("metrics.json"))
    assert not (tmp / "elsewhere" / "mlruns").exists()
    # the run starts when the pipeline started: its duration covers the pipeline's wall time
    assert run.info.start_time == int(metrics["started_at"] * 1000)
    assert (run.info.end_time - run.info.start_time) / 1000 >= metrics["stages"]["total_seconds"]
    assert run.data.metrics["pipeline_seconds"] == metrics["stages"]["total_seconds"]
    assert run.data.params["data"] == str((tmp / "shop").resolve())
    [given] = run.inputs.dataset_inputs
    assert given.dataset.digest == metrics["data_hash"] and given.dataset.name == "shop"
    events = pl.read_parquet(tmp / "shop" / "events.parquet").height
    assert json.loads(given.dataset.profile)["num_rows"] == events
    assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == "training"


def test_artifact_location_is_beside_a_sqlite_store_only(tmp_path: Path) -> None:
    from recsys.pipeline.tracking import artifact_location

    assert artifact_location(f"sqlite:///{tmp_path}/demo/mlflow.db") == (tmp_path / "demo" / "mlartifacts").as_uri()
    assert artifact_location("http://mlflow.internal:5000") is None


def test_evaluate_and_train_give_one_baseline_one_name_one_figure(runs: dict) -> None:
    from recsys.core.dataset import load_dataset
    from recsys.pipeline.evaluate import evaluate_baselines
    from recsys.pipeline.train import BASELINES

    _, table = evaluate_baselines(load_dataset(runs["tmp"] / "shop"))
    evaluated = {r["model"]: r for r in table.iter_rows(named=True)}
    trained = runs["full"]["comparison"]
    shared = [b for b in BASELINES if b in trained]
    assert {"popularity", "recent_popularity_1d", "recent_popularity_7d"} <= set(shared)
    assert set(shared) <= set(evaluated)
    for name in [*shared, "oracle"]:  # the same scorer on the same test requests: the same figures
        for metric in ("ndcg@10", "auc", "mrr@10"):
            assert evaluated[name][metric] == pytest.approx(trained[name][metric]["mean"], abs=1e-12), (name, metric)
        assert evaluated[name]["requests"] == trained[name]["ndcg@10"]["n"]
    assert "popularity_7d" not in evaluated  # the old name of recent_popularity_7d


def test_stage_lines_from_a_saved_run(runs: dict) -> None:
    from recsys.pipeline.report import run_summary

    run_dir = runs["tmp"] / "full"
    lines = run_summary(run_dir)
    assert [line.split(":")[0] for line in lines[:3]] == ["state", "features", "ranker_full"]
    leads = runs["full"]["gate"]["lead"]  # after the gate's line, one line per job's lead
    assert leads and all(" — " in line for line in lines[: -1 - len(leads)])
    assert lines[-1 - len(leads)] == f"ranker: {runs['full']['gate']['line']}"
    assert lines[-len(leads):] == [f"ranker: {text}" for text in leads.values()]  # one job: no job name
    assert "valid nDCG@10" in lines[2] and "{" not in "".join(lines)
    assert all(len(line) <= 120 for line in lines)


def interest_metrics(kept: str, pre: float, tuned: float, gain_low: float | None = None) -> dict:
    row = {"epoch": 0, "step": 10, "model": "fine-tuned", "valid_auc": tuned, "valid_ndcg@10": 0.5}
    if gain_low is not None:
        row["gain_low"] = gain_low
    return {"kept": kept, "select_metric": "mean", "valid_auc": tuned if kept == "fine-tuned" else pre,
            "epochs": [{"epoch": -1, "step": 0, "model": "pretrained", "valid_auc": pre, "valid_ndcg@10": 0.5}, row]}


def test_the_interest_line_says_which_weights_were_kept_and_why() -> None:
    from recsys.pipeline.report import interest_outcome

    assert interest_outcome(interest_metrics("pretrained", 0.581, 0.577, -0.01)) == (
        "kept pretrained weights (fine-tuned valid AUC 0.577 < 0.581 pretrained)")
    assert interest_outcome(interest_metrics("pretrained", 0.581, 0.590, -0.004)) == (
        "kept pretrained weights (fine-tuned valid AUC 0.590 ≥ 0.581 pretrained; gain not significant, lower bound -0.004)")
    assert interest_outcome(interest_metrics("fine-tuned", 0.623, 0.642, 0.005)) == (
        "fine-tuned weights kept (valid AUC 0.642 > 0.623 pretrained; gain lower bound +0.005)")


QUIET_SCRIPT = """
import logging, os, sys, warnings
from rich.console import Console
from recsys.core import logs

console, out = Console(stderr=True, width=100), Console(width=100)
logs.setup(False, console)
mlflow_like = logging.getLogger("mlflow.models")  # a library with its own handler on stderr, as MLflow has
mlflow_like.addHandler(logging.StreamHandler(sys.stderr))
mlflow_like.propagate = False
with logs.quiet(sys.argv[1], console, out):
    logs.progress.info("interest: kept pretrained weights — 146 s")
    out.print("a table row")
    logging.getLogger("ray.train").info("Reporting training result 1: {...}")
    mlflow_like.warning("artifact_path is deprecated")
    logging.getLogger("recsys.pipeline.train").info("stage features: running (key 1234)")
    logging.getLogger("features.registry").warning("a warning of ours")
    logging.getLogger("some.library").error("a library error")
    warnings.warn("DeprecationWarning noise", UserWarning, stacklevel=1)
    print("worker chatter on stdout")
    os.write(2, b"native chatter on fd 2\\n")
    sys.stderr.write("python chatter on stderr\\n")
print("after the block")
"""


def test_quiet_sends_library_output_to_the_log_and_keeps_stage_lines_and_errors(tmp_path: Path) -> None:
    import subprocess

    log = tmp_path / "run" / "train.log"
    done = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, str(log)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    shown, written = done.stdout + done.stderr, log.read_text()
    assert "interest: kept pretrained weights — 146 s" in done.stderr
    assert "a table row" in done.stdout and "after the block" in done.stdout
    assert "a warning of ours" in shown and "a library error" in shown
    for noise in ("Reporting training result", "artifact_path is deprecated", "stage features: running",
                  "DeprecationWarning noise", "worker chatter", "native chatter", "python chatter"):
        assert noise not in shown, noise
        assert noise in written, noise
    assert len(shown.splitlines()) == 5


def test_compare_is_one_row_per_run_with_deltas_vs_the_first_and_no_reference_zeros(runs: dict, tmp_path: Path) -> None:
    from recsys.cli import app
    from recsys.pipeline.compare import compare_runs, compare_wide

    full, pop = runs["tmp"] / "full", runs["tmp"] / "pop"
    wide = compare_wide(compare_runs([full, pop], resamples=200))
    assert wide["run"].to_list() == [str(full), str(pop)]
    first, second = wide.row(0, named=True), wide.row(1, named=True)
    assert first["ndcg@10_delta"] is None and first["ndcg@10_delta_low"] is None  # the reference: no delta of 0
    assert second["auc_delta_low"] is not None and second["auc_delta"] == pytest.approx(second["auc"] - first["auc"], abs=1e-9)
    shown = CliRunner().invoke(app, ["experiments", "compare", str(full), str(pop), "--plot", str(tmp_path / "c.png")],
                               env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "+0.0000 [+0.0000" not in shown.output and "+0.000 [+0.000,+0.000]" not in shown.output
    assert "Recall@10 omitted" in shown.output  # slates of the synthetic shop have 10 items
    assert "(full)" in shown.output and "(pop)" in shown.output and (tmp_path / "c.png").stat().st_size > 0


def test_run_labels_are_distinct_and_recall_is_trivial_only_on_short_slates() -> None:
    from recsys.pipeline.compare import longest_slate, recall_is_trivial, run_labels

    assert run_labels(["demo/runs/synthetic", "demo/runs/behavioural"], ["synthetic", "synthetic_behavioural"]) == [
        "synthetic", "synthetic_behavioural"]
    assert run_labels(["runs/a", "runs/b"], ["x", "x"]) == ["x (a)", "x (b)"]
    assert run_labels(["a/x", "b/x"], ["x", "x"]) == ["x (a/x)", "x (b/x)"]
    slates = pl.DataFrame({"request_id": ["r1"] * 12 + ["r2"] * 8, "label": [1] + [0] * 11 + [1] + [0] * 7})
    assert longest_slate(slates) == 12 and not recall_is_trivial(12)
    assert longest_slate(slates.filter(pl.col("request_id") == "r2")) == 8 and recall_is_trivial(8)
    unclicked = pl.DataFrame({"request_id": ["r1"] * 12, "label": [0] * 12})
    assert longest_slate(unclicked) == 0  # a request without a click is not judged


def test_train_and_evaluate_tables_leave_out_a_trivial_recall(runs: dict) -> None:
    from recsys.cli import app

    shown = CliRunner().invoke(app, ["evaluate", "--data", str(runs["tmp"] / "shop")], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "Recall@10 omitted" in shown.output and "recent_popularity_7d" in shown.output
    header = next(line for line in shown.output.splitlines() if "requests" in line)
    assert "Recall@10" not in header
