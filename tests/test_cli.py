"""The CLI as a user runs it: a real subprocess, exit codes and what is printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_text


def recsys(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recsys.cli", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_synth_describe_validate_evaluate(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    assert recsys("data", "synth", "--out", shop, "--users", "300", "--items", "60", "--days", "8").returncode == 0
    described = recsys("data", "describe", shop, "--json")
    assert described.returncode == 0
    summary = json.loads(described.stdout)
    assert summary["items"] == 60 and summary["source"] == "synth"
    assert recsys("data", "validate", shop).returncode == 0
    evaluated = recsys("evaluate", "--data", shop, "--json", tmp_path / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "oracle" in evaluated.stdout
    models = {row["model"] for row in json.loads((tmp_path / "eval.json").read_text())}
    # the names `recsys train` gives the same scorers (recsys/pipeline/train.py BASELINES)
    assert {"oracle", "popularity", "recent_popularity_1d", "recent_popularity_7d", "recent_popularity", "recent_ctr",
            "random"} <= models


def test_corrupted_csv_is_one_line_exit_2_no_traceback(tmp_path: Path) -> None:
    items = write_text(tmp_path / "items.csv", "item_id,title,text\na,A,x\n")
    events = write_text(tmp_path / "events.csv", "this is,not,the,contract\n1,2,3,4\n")
    result = recsys("data", "import", "events", "--events", events, "--items", items, "--out", tmp_path / "ds")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "lacks column(s)" in result.stderr and "user_id" in result.stderr


def test_import_prints_counts_per_reason(tmp_path: Path) -> None:
    items = write_text(tmp_path / "items.csv", "item_id,title,text\na,A,x\n")
    events = write_text(tmp_path / "events.csv", "user_id,item_id,timestamp,clicked\nu,a,2024-01-01,1\nu,a,yesterday,1\nu,b,2024-01-01,2\n")
    result = recsys("data", "import", "events", "--events", events, "--items", items, "--out", tmp_path / "ds")
    assert result.returncode == 0, result.stderr
    assert "events/bad_timestamp" in result.stdout and "events/bad_clicked" in result.stdout


def test_validate_catches_a_tampered_dataset(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    recsys("data", "synth", "--out", shop, "--users", "20", "--items", "10", "--days", "3")
    import polars as pl

    events = pl.read_parquet(shop / "events.parquet")
    events.head(5).write_parquet(shop / "events.parquet")
    result = recsys("data", "validate", shop)
    assert result.returncode == 1
    assert "content hash differs" in result.stdout


def test_not_a_dataset_directory(tmp_path: Path) -> None:
    result = recsys("data", "describe", tmp_path)
    assert result.returncode == 2 and "not a dataset directory" in result.stderr


def test_serve_and_online_report_refuse_bad_references_in_one_line(tmp_path: Path) -> None:
    for args, expected in [
        (("serve", "--run", tmp_path / "no-run"), "is not a trained run directory"),
        (("serve", "--model", "models:/nope"), "expected models:/NAME@ALIAS"),
        (("serve", "--model", "models:/nope@champion"), "names no existing store"),  # the test's store is not made yet
        (("experiments", "online", "--state-dir", tmp_path), "feedback.jsonl not found"),
        (("bench", "serve", "--model", tmp_path, "--url", "http://127.0.0.1:9", "--floor"), "without --url"),
    ]:
        done = recsys(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # MLFLOW_TRACKING_URI's store (tests/conftest.py): not created empty
    write_text(tmp_path / "mlflow.db", "")  # an empty SQLite file: a store without that model
    done = recsys("serve", "--model", "models:/nope@champion")
    assert done.returncode == 2 and "not found in the registry" in done.stderr and "Traceback" not in done.stderr, done.stderr


def one_clean_line(done: subprocess.CompletedProcess[str]) -> str:
    """The error a user sees: exit code 2 and one line on stderr, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_missing_runs_and_bad_config_values_are_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "half-run").mkdir()
    write_text(tmp_path / "half-run" / "metrics.json", "{}")
    for args, expected in [
        (("experiments", "compare", tmp_path / "nope"), "no such run directory"),  # was a 60-line traceback
        (("experiments", "compare", tmp_path / "half-run"), "not a finished `recsys train` run (no ranker/spec.json"),
        (("experiments", "ablate", tmp_path / "nope"), "no such run directory"),
        (("experiments", "list", "--directory", tmp_path / "nope"), "is not a folder"),
        (("train", "--data", tmp_path, "--set", "ranker.num_leaves=abc"), "[ranker]: num_leaves = 'abc'; expected an integer"),
        (("train", "--data", tmp_path, "--set", "ranker.num_leaves=-3"), "num_leaves = -3; expected >= 2"),
        (("train", "--data", tmp_path, "--set", "ranker.task=bogus"), "task = 'bogus'; expected one of"),
        (("train", "--data", tmp_path, "--set", "split.test_fraction=2"), "[split]: test_fraction = 2; expected > 0 and < 1"),
        (("train", "--data", tmp_path, "--set", "stages.blurbs=1"), "blurbs = 1; expected true or false"),
        (("train", "--data", tmp_path, "--set", "interest.history_len=99"), "history_len=99, expected 1 to 32"),
        (("score", "--run", tmp_path / "nope", "--candidates", tmp_path / "c.parquet", "--out", tmp_path / "s.parquet"),
         "not found"),
    ]:
        line = one_clean_line(recsys(*args))
        assert expected in line, (args, line)


def test_a_missing_file_deep_in_a_command_is_one_line_and_v_shows_the_traceback(monkeypatch, capsys) -> None:
    import logging

    import pytest

    from recsys import cli

    def lost() -> None:
        raise FileNotFoundError(2, "No such file or directory", "runs/x/features/test.parquet")

    monkeypatch.setattr(cli, "app", lost)
    root, level = logging.getLogger(), logging.getLogger().level
    try:
        root.setLevel(logging.INFO)
        with pytest.raises(SystemExit) as stop:
            cli.run()
        assert stop.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "error: No such file or directory: runs/x/features/test.parquet (-v shows where)"]
        root.setLevel(logging.DEBUG)  # what -v sets
        with pytest.raises(FileNotFoundError):
            cli.run()
    finally:
        root.setLevel(level)


def test_serve_without_a_tracking_uri_creates_no_store_and_names_the_variable(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def serve() -> str:
        done = subprocess.run([sys.executable, "-m", "recsys.cli", "serve", "--model", "models:/recsys-ranker@champion"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
        return one_clean_line(done)

    line = serve()
    assert "MLFLOW_TRACKING_URI is not set" in line and "mlflow.db" in line, line
    assert not (tmp_path / "mlflow.db").exists()  # MLflow used to create an empty store here
    write_text(tmp_path / "demo" / "mlflow.db", "")  # what `make demo` leaves
    line = serve()
    assert f"MLFLOW_TRACKING_URI=sqlite:///{(tmp_path / 'demo' / 'mlflow.db').resolve()}" in line, line
    assert not (tmp_path / "mlflow.db").exists()


def test_make_serve_takes_a_port(tmp_path: Path) -> None:
    import shutil

    import pytest

    if not shutil.which("make"):
        pytest.skip("needs make")
    root = Path(__file__).resolve().parent.parent
    dry = subprocess.run(["make", "-n", "-C", str(root), "serve", "PORT=8123"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "--port 8123" in dry.stdout and "models:/recsys-ranker@champion" in dry.stdout


def test_help_stays_in_the_repo_flags_have_no_type_and_every_option_is_described() -> None:
    import click
    import typer
    from typer.testing import CliRunner

    from recsys.cli import app

    root = Path(__file__).resolve().parent.parent
    assert (root / "docs" / "CONTRACT.md").read_text().count("recsys score --run RUN_DIR") == 1
    runner = CliRunner()

    def commands(cmd: click.Command, path: list[str]):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from commands(sub, [*path, name])

    seen = 0
    for path, cmd in commands(typer.main.get_command(app), []):
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
        assert shown.exit_code == 0, (path, shown.output)
        assert "../" not in shown.output and "shared/" not in shown.output, (path, shown.output)  # nothing outside the repo
        assert "<bool>" not in shown.output, (path, shown.output)  # `--verbose -v <bool>`: a flag takes no value
        undescribed = [p.name for p in cmd.params if isinstance(p, click.Option) and not p.help]
        assert not undescribed, (path, undescribed)
        seen += 1
    assert seen > 20
    synth = runner.invoke(app, ["data", "synth", "--help"], env={"COLUMNS": "250"}).output
    assert "Days of simulated traffic" in synth
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "250"}).output
    assert "-v" in top and "Log debug detail" in top
    events = runner.invoke(app, ["data", "import", "events", "--help"], env={"COLUMNS": "250"}).output
    assert "docs/CONTRACT.md" in events


def test_every_experiment_config_round_trips_through_the_value_checks() -> None:
    """What a run saves (config.json, with None and list values) loads again: the type checks
    refuse only what is wrong."""
    from dataclasses import asdict

    from models.blurbs.config import blurb_config
    from models.interest.config import interest_config
    from recsys.core.config import from_dict
    from recsys.pipeline.configure import load_config

    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "experiments").glob("*.toml")):
        cfg = load_config(path)
        saved = json.loads(cfg.to_json())
        saved["interest"] = json.loads(json.dumps(asdict(interest_config(cfg))))  # every field, None ones too
        saved["blurbs"] = json.loads(json.dumps(asdict(blurb_config(cfg))))
        assert from_dict(saved, str(path)).ranker == cfg.ranker
