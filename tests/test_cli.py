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
    assert {"oracle", "popularity", "recent_ctr", "random"} <= models


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
        (("serve", "--model", "models:/nope@champion"), "not found in the registry"),
        (("experiments", "online", "--state-dir", tmp_path), "feedback.jsonl not found"),
    ]:
        done = recsys(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
