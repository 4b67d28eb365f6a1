"""The small public Python API, for notebooks: the same operations as the CLI.

    from recsys.api import load_run, compare, train_run
    run = load_run("runs/synthetic")
    run.metrics["comparison"]["ranker"]["ndcg@10"]
    scored = run.score(pl.DataFrame({"user_id": ["u00001"], "item_id": ["i00042"]}))
    compare(["runs/a", "runs/b"])        # polars frame: metric values, CIs, paired deltas
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from recsys.pipeline.compare import compare_runs, comparison_of_run


@dataclass
class Run:
    path: Path
    config: dict[str, Any] = field(init=False)
    metrics: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.config = json.loads((self.path / "config.json").read_text())
        self.metrics = json.loads((self.path / "metrics.json").read_text())

    @cached_property
    def scorer(self) -> Any:
        from serving.scorer import Scorer

        return Scorer(self.path)

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` (user_id, item_id, ...) plus a `score` column, as of the end of training."""
        return frame.with_columns(score=pl.Series(self.scorer.score(frame), dtype=pl.Float64))

    def features(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The feature rows the ranker sees for these (user_id, item_id) pairs."""
        return self.scorer.features(frame)

    def comparison(self) -> pl.DataFrame:
        """The ranker next to popularity, trend and the interest model alone (and the oracle)."""
        return comparison_of_run(self.path)

    def importance(self) -> pl.DataFrame:
        return pl.read_csv(self.path / "ranker" / "importance.csv")


def load_run(path: str | Path) -> Run:
    return Run(Path(path))


def compare(paths: list[str | Path]) -> pl.DataFrame:
    return compare_runs([Path(p) for p in paths])


def train_run(data: str | Path, run_dir: str | Path, config: str | Path | None = None, overrides: list[str] | None = None,
              track: bool = True) -> Run:
    from recsys.pipeline.configure import load_config
    from recsys.pipeline.train import train

    train(load_config(Path(config) if config else None, overrides), Path(data), Path(run_dir), track=track)
    return load_run(run_dir)
