"""The one Scorer: online ranking and batch scoring both go through `Scorer.features_of`.

It loads a run directory (ranker, feature spec, stage outputs, and the state as of the end of
training: catalog and event log) and scores (user_id, item_id) pairs at a moment `ts` (default:
just after the last logged event). Unknown users and items get finite scores (cold start).

Features at a moment later than every logged event (every online request on the log clock, and
batch scoring by default) come from the log's running counters (`features.state.LogState`, the
groups' `at_moment` twins); any other moment from the point-in-time polars groups over the log.
Both give identical values (tests/test_moment.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from features.behavioural import items_read
from features.groups import resolve
from features.registry import FeatureContext, MomentContext, MomentFeatures, compute_features, moment_features
from features.state import LogState, micros
from models.ranker import is_ranker_dir, load_ranker
from recsys.core.config import RunConfig, from_dict
from recsys.core.errors import RecsysInputError
from serving.artefacts import load_artefacts


@dataclass(frozen=True)
class FeatureRows:
    """Feature rows of targets, in their order, as scoring and explaining read them: the ranker's
    matrix (float64, null = NaN) and any feature column by name. From the counters (`moment`,
    no frame is built) or from a point-in-time frame."""

    user_ids: list[str]
    item_ids: list[str]
    values: np.ndarray  # (rows, ranker features)
    moment: MomentFeatures | None = None
    frame: pl.DataFrame | None = None

    def column(self, name: str) -> np.ndarray | None:
        """A feature column as float64 (null = NaN); None when these rows do not have it."""
        if self.moment is not None:
            return self.moment.columns.get(name)
        if self.frame is not None and name in self.frame.columns:
            return self.frame[name].cast(pl.Float64, strict=False).to_numpy()
        return None

    def to_frame(self) -> pl.DataFrame:
        if self.moment is not None:
            return self.moment.frame()
        assert self.frame is not None
        return self.frame


class Scorer:
    def __init__(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").exists() or not is_ranker_dir(run_dir / "ranker"):
            raise RecsysInputError(f"{run_dir} is not a trained run (no config.json or ranker/); run `recsys train` first")
        self.run_dir = run_dir
        self.config: RunConfig = from_dict(json.loads((run_dir / "config.json").read_text()), str(run_dir / "config.json"))
        self.ranker = load_ranker(run_dir / "ranker")
        self.groups = resolve(self.ranker.groups)
        self.items = pl.read_parquet(run_dir / "state" / "items.parquet")
        self.log = pl.read_parquet(run_dir / "state" / "log.parquet")
        self.artefacts = load_artefacts(run_dir, self.config)
        last: datetime | None = self.log["ts"].max()  # type: ignore[assignment]
        self.as_of = (last + timedelta(microseconds=1)) if last else datetime.now().astimezone()
        self.has_twins = all(g.has_twin for g in self.groups)
        self._log_state: LogState | None = None

    def log_state(self) -> LogState:
        """Running counters of the run's own log, built on first use (batch scoring)."""
        if self._log_state is None:
            self._log_state = LogState.of(self.log, self.items)
        return self._log_state

    def related_items(self, item_ids: list[str]) -> list[str]:
        """The items whose events these candidates' features read (see `items_read`)."""
        if not any(g.name == "user_topic" for g in self.groups):
            return item_ids
        return items_read(self.artefacts.get("topics"), item_ids)

    def features(self, frame: pl.DataFrame, ts: datetime | None = None, *, log: pl.DataFrame | None = None,
                 totals: pl.DataFrame | None = None) -> pl.DataFrame:
        """Feature rows for unique (user_id, item_id) pairs of `frame`, as of `ts`."""
        pairs = frame.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique(maintain_order=True)
        targets = pairs.with_columns(
            request_id=pl.col("user_id"),
            ts=pl.lit(ts or self.as_of).cast(pl.Datetime("us", "UTC")),
        )
        if log is None and self.has_twins:
            return self.features_of(targets, log=self.log, state=self.log_state())
        return self.features_of(targets, log=log, totals=totals)

    def features_of(self, targets: pl.DataFrame, *, log: pl.DataFrame | None = None,
                    totals: pl.DataFrame | None = None, state: LogState | None = None) -> pl.DataFrame:
        """Feature rows for targets (request_id, user_id, item_id, ts; (request_id, item_id)
        unique), in their order. With `state` (counters of the whole log) and every target later
        than its last event, from the counters. Otherwise from `log`, which replaces the run's
        event log (without `state`: the live log cut down to the requests' users and items, with
        `totals` = `global_totals` of the whole live log)."""
        return self.rows_of(targets, log=log, totals=totals, state=state).to_frame()

    def rows_of(self, targets: pl.DataFrame, *, log: pl.DataFrame | None = None, totals: pl.DataFrame | None = None,
                state: LogState | None = None, ts: np.ndarray | None = None) -> FeatureRows:
        """`features_of` as FeatureRows: from the counters without building a frame (what
        serving and batch scoring score from). `ts`: the targets' moments in µs, when known."""
        if state is not None and self.has_twins:
            ts = micros(targets["ts"]) if ts is None else ts
            if state.before(ts):
                ctx = MomentContext(targets, ts, state, self.artefacts)
                moment = moment_features(self.groups, ctx)
                return FeatureRows(ctx.user_ids, ctx.item_ids, moment.matrix(self.ranker.features), moment=moment)
            if log is None:
                raise ValueError("features_of: targets earlier than the state's last event need the log")
        context = FeatureContext(targets, self.log if log is None else log, self.items, self.artefacts, totals)
        frame = compute_features(self.groups, context)
        return FeatureRows(frame["user_id"].to_list(), frame["item_id"].to_list(), self.ranker.matrix(frame), frame=frame)

    def score(self, frame: pl.DataFrame, ts: datetime | None = None, num_threads: int = 0) -> np.ndarray:
        """One finite score per row of `frame` (user_id, item_id), higher = more relevant."""
        if frame.height == 0:
            return np.zeros(0)
        pairs = frame.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique(maintain_order=True)
        targets = pairs.with_columns(request_id=pl.col("user_id"), ts=pl.lit(ts or self.as_of).cast(pl.Datetime("us", "UTC")))
        rows = self.rows_of(targets, log=self.log, state=self.log_state()) if self.has_twins else self.rows_of(targets)
        scored = pairs.with_columns(score=pl.Series(self.ranker.predict(rows.values, num_threads=num_threads), dtype=pl.Float64))
        joined = frame.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).join(
            scored, on=["user_id", "item_id"], how="left", maintain_order="left"
        )
        scores = joined["score"].to_numpy()
        if not np.all(np.isfinite(scores)):
            raise AssertionError("bug: the ranker produced a non-finite score")
        return scores
