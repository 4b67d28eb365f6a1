"""Shared fixtures: tiny data made in the test, written where pytest says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tiny_shop(tmp_path: Path) -> Path:
    """A small synthetic shop (about 3k impressions) in a dataset directory."""
    from recsys.data.synth import SynthConfig, synth

    out = tmp_path / "shop"
    synth(SynthConfig(users=120, items=80, days=10, seed=3), out)
    return out


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own MLflow store, never the developer's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
