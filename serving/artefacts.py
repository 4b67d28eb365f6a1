"""Load the trained stage outputs a run's feature groups need (inference only, no training code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from recsys.config import RunConfig

BLURBS_FILE = Path("blurbs") / "blurbs.parquet"


def load_artefacts(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    artefacts: dict[str, Any] = {}
    if cfg.stages.interest and (run_dir / "interest").exists():
        from models.interest.scorer import InterestScorer

        artefacts["interest"] = InterestScorer.load(run_dir / "interest")
    if cfg.stages.blurbs and (run_dir / BLURBS_FILE).exists():
        artefacts["blurbs"] = pl.read_parquet(run_dir / BLURBS_FILE)
    return artefacts
