"""The one Scorer: online ranking and batch scoring both call `Scorer.score(frame)`.

It loads a run directory (ranker, feature spec, stage outputs, and the state as of the end of
training: catalog and event log) and scores (user_id, item_id) pairs at a moment `ts` (default:
just after the last logged event). Unknown users and items get finite scores (cold start).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from features.registry import FeatureContext, compute_features, resolve
from models.ranker import Ranker
from recsys.config import RunConfig, from_dict
from recsys.errors import RecsysInputError
from serving.artefacts import load_artefacts


class Scorer:
    def __init__(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").exists() or not (run_dir / "ranker" / "model.txt").exists():
            raise RecsysInputError(f"{run_dir} is not a trained run (no config.json or ranker/); run `recsys train` first")
        self.run_dir = run_dir
        self.config: RunConfig = from_dict(json.loads((run_dir / "config.json").read_text()), str(run_dir / "config.json"))
        self.ranker = Ranker.load(run_dir / "ranker")
        self.groups = resolve(self.ranker.groups)
        self.items = pl.read_parquet(run_dir / "state" / "items.parquet")
        self.log = pl.read_parquet(run_dir / "state" / "log.parquet")
        self.artefacts = load_artefacts(run_dir, self.config)
        last: datetime | None = self.log["ts"].max()  # type: ignore[assignment]
        self.as_of = (last + timedelta(microseconds=1)) if last else datetime.now().astimezone()

    def features(self, frame: pl.DataFrame, ts: datetime | None = None, *, log: pl.DataFrame | None = None,
                 totals: pl.DataFrame | None = None) -> pl.DataFrame:
        """Feature rows for unique (user_id, item_id) pairs of `frame`, as of `ts`."""
        pairs = frame.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique(maintain_order=True)
        targets = pairs.with_columns(
            request_id=pl.col("user_id"),
            ts=pl.lit(ts or self.as_of).cast(pl.Datetime("us", "UTC")),
        )
        return self.features_of(targets, log=log, totals=totals)

    def features_of(self, targets: pl.DataFrame, *, log: pl.DataFrame | None = None,
                    totals: pl.DataFrame | None = None) -> pl.DataFrame:
        """Feature rows for targets (request_id, user_id, item_id, ts; (request_id, item_id)
        unique), in their order. `log` replaces the run's event log: online serving passes its
        live log cut down to the requests' users and items, with `totals` = `global_totals` of
        the whole live log."""
        context = FeatureContext(targets, self.log if log is None else log, self.items, self.artefacts, totals)
        return compute_features(self.groups, context)

    def score(self, frame: pl.DataFrame, ts: datetime | None = None, num_threads: int = 0) -> np.ndarray:
        """One finite score per row of `frame` (user_id, item_id), higher = more relevant."""
        if frame.height == 0:
            return np.zeros(0)
        feats = self.features(frame, ts)
        scored = feats.select("user_id", "item_id").with_columns(
            score=pl.Series(self.ranker.predict(feats, num_threads=num_threads), dtype=pl.Float64)
        )
        joined = frame.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).join(
            scored, on=["user_id", "item_id"], how="left", maintain_order="left"
        )
        scores = joined["score"].to_numpy()
        if not np.all(np.isfinite(scores)):
            raise AssertionError("bug: the ranker produced a non-finite score")
        return scores
