"""One loaded model ready to rank a request: the Scorer (the same code batch scoring runs), the
catalog's titles and blurbs, and explanations from the ranker's contributions."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from features.behavioural import horizon_of
from features.state import LogState, micros
from models.blurbs.safety import Rules, extractive_summary
from recsys.core.stopwatch import stage
from serving.api_models import Contribution, ModelInfo, RankedItem
from serving.explain import EVIDENCE, reasons, top_features
from serving.online import LogSnapshot, PointInTimeRefused
from serving.refs import ResolvedModel
from serving.scorer import FeatureRows, Scorer


@dataclass(frozen=True)
class Ask:
    """One validated request: candidates unique, top_k within bounds, ts in UTC."""

    user_id: str
    item_ids: list[str]
    ts: datetime
    top_k: int
    explain: bool = True


@dataclass
class Ranking:
    """What one request produced: the feature rows and scores of every candidate (in request
    order, for the served-features log) and the ranked, explained top items."""

    item_ids: list[str]
    values: np.ndarray  # the ranker's feature matrix of these rows (null = NaN), in ranker.features order
    scores: np.ndarray
    items: list[RankedItem]
    known_user: bool  # the live log has events of this user


class RankingModel:
    def __init__(self, model: ResolvedModel, arm: str) -> None:
        self.model = model
        self.scorer = Scorer(model.run_dir)
        items = self.scorer.items
        self.catalog = {
            r["item_id"]: r for r in items.select("item_id", "title", "text", "category").to_dicts()
        }
        blurbs = self.scorer.artefacts.get("blurbs")
        self.blurbs: dict[str, tuple[str, str]] = {}
        if blurbs is not None:
            for r in blurbs.select("item_id", "blurb", "source").to_dicts():
                if r["blurb"]:
                    self.blurbs[r["item_id"]] = (r["blurb"], r["source"])
        self.rules = Rules()
        self._live: LogState | None = None  # counters of the live log, for this model's catalog
        self._live_lock = threading.Lock()
        trained = (model.run_dir / "metrics.json")
        self.info = ModelInfo(
            arm=arm, ref=model.ref, run_dir=str(model.run_dir), model_name=model.name, version=model.version,
            alias=model.alias,
            trained_at=datetime.fromtimestamp(trained.stat().st_mtime, timezone.utc).isoformat() if trained.exists() else None,
            features=self.scorer.ranker.features, feature_groups=self.scorer.ranker.groups,
            loaded_at=datetime.now(timezone.utc).isoformat(),
        )

    @property
    def feature_names(self) -> list[str]:
        return self.scorer.ranker.features

    def blurb(self, item_id: str) -> tuple[str | None, str]:
        """The checked generated blurb (or its flagged fallback) from the run; else an extractive
        line of the catalog text, computed once; unknown items have none."""
        if item_id in self.blurbs:
            return self.blurbs[item_id]
        row = self.catalog.get(item_id)
        if row is None:
            return None, "none"
        text = extractive_summary(row["title"] or "", row["text"] or "", self.rules) or None
        self.blurbs[item_id] = (text, "extractive") if text else (None, "none")  # type: ignore[assignment]
        return self.blurbs[item_id]

    def catch_up(self, snapshot: LogSnapshot) -> LogState:
        """The live log's counters, brought up to `snapshot`: built on first use (folding events
        older than the model's longest feature window, so memory stays flat over a long stream),
        then only the events taken in since are added. Rebuilt, from the rows on disk, when the
        frame let go of rows they had not taken in yet. Counters already past `snapshot` (another
        thread took newer feedback in) stay as they are."""
        state = self._live
        new = None if state is None or state.rows >= snapshot.taken else snapshot.since(state.rows)
        if state is None or (state.rows < snapshot.taken and new is None):
            state = LogState(self.scorer.items)
            state.set_horizon(horizon_of(self.scorer.artefacts))
            for block in snapshot.every_row():
                state.add(block)
            state.fold()
        elif new is not None:
            try:
                state.add(new)
            except BaseException:
                self._live = None  # half-added: rebuild from the log next time rather than count twice
                raise
        self._live = state
        return state

    def take_in(self, snapshot: LogSnapshot) -> None:
        """`catch_up` outside a request, while requests may be reading the counters."""
        with self._live_lock:
            self.catch_up(snapshot)

    def features(self, snapshot: LogSnapshot, targets: pl.DataFrame, ts: np.ndarray, users: list[str],
                 items: list[str]) -> tuple[FeatureRows, set[str]]:
        """Feature rows of `targets` (at `ts`, µs) and which of `users` the live log knows. From
        the counters when every target is later than the log's last event (the usual case);
        otherwise (a request's own earlier `ts`) point in time from the log's events of these
        users and items, while the frame still holds every event before them."""
        with self._live_lock:  # counters are updated in place: no request reads half an update
            with stage("features/catch_up"):
                state = self.catch_up(snapshot)
            live = state.before(ts)
            if not live and snapshot.complete_until is not None and len(ts) and ts.max() > micros(snapshot.complete_until)[0]:
                if snapshot.last_ts is not None and ts.min() > micros(snapshot.last_ts)[0]:
                    live = True  # later than this snapshot: the counters, with the feedback taken in meanwhile
                else:
                    raise PointInTimeRefused(snapshot.point_in_time_refusal(EPOCH + timedelta(microseconds=int(ts.max()))) or "")
            if self.scorer.has_twins and live:
                return self.scorer.rows_of(targets, state=state, ts=ts), {u for u in users if u in state.users}
        view = snapshot.view(users, self.scorer.related_items(items))  # every event of these users is in it
        known = set(view.filter(pl.col("user_id").is_in(users))["user_id"].unique().to_list())
        return self.scorer.rows_of(targets, log=view, totals=snapshot.totals), known

    def rank_many(self, snapshot: LogSnapshot, asks: list[Ask]) -> list[Ranking]:
        """Rank several requests with one feature computation and one LightGBM call (what
        `@serve.batch` hands over); a single request is a batch of one."""
        with stage("targets"):
            targets, ts = targets_of(asks)
            users = sorted({a.user_id for a in asks})
            items = sorted({i for a in asks for i in a.item_ids})
        with stage("features"):
            rows, known = self.features(snapshot, targets, ts, users, items)
        values = rows.values  # once: scores, contributions and the served log read it
        # one thread: threads cost more than they save on a few hundred rows, and replicas
        # (not threads) are how the service uses more cores
        with stage("predict"):
            scores = self.scorer.ranker.predict(values, num_threads=1)
        bounds = np.cumsum([0] + [len(a.item_ids) for a in asks])
        orders = [bounds[n] + np.argsort(-scores[bounds[n]:bounds[n + 1]], kind="stable")[:a.top_k] for n, a in enumerate(asks)]
        explained = [o for o, a in zip(orders, asks) if a.explain]
        with stage("explain"):
            why, tops = self.explain(rows, np.concatenate(explained) if explained else np.zeros(0, np.int64), known)
        with stage("items"):
            out = []
            for n, order in enumerate(orders):
                ranked = []
                for rank, j in enumerate(order.tolist(), start=1):
                    item_id = rows.item_ids[j]
                    row = self.catalog.get(item_id) or {}
                    blurb, source = self.blurb(item_id)
                    ranked.append(RankedItem(
                        item_id=item_id, rank=rank, score=float(scores[j]), title=row.get("title"),
                        category=row.get("category"), blurb=blurb, blurb_source=source, reason=why.get(j),  # type: ignore[arg-type]
                        top_features=[Contribution(feature=f, value=v, contribution=c) for f, v, c in tops.get(j, [])],
                    ))
                lo, hi = int(bounds[n]), int(bounds[n + 1])
                out.append(Ranking(rows.item_ids[lo:hi], values[lo:hi], scores[lo:hi], ranked, asks[n].user_id in known))
        return out

    def explain(
        self, rows: FeatureRows, explained: np.ndarray, known: set[str]
    ) -> tuple[dict[int, str | None], dict[int, list[tuple[str, float | None, float]]]]:
        """Reasons and top contributions of the rows `explained` (the returned top_k only:
        contributions cost ~0.1 ms a row), by row index."""
        if len(explained) == 0:
            return {}, {}
        top = rows.values[explained]
        with stage("explain/contributions"):
            contrib = self.scorer.ranker.contributions(top, num_threads=1)
        at = explained.tolist()
        item_of, user_of = [rows.item_ids[j] for j in at], [rows.user_ids[j] for j in at]
        categories = [(self.catalog.get(i) or {}).get("category") for i in item_of]
        # the counts behind each phrase, from the same feature rows (a ranker may use fewer columns)
        evidence = {}
        for name in EVIDENCE:
            column = rows.column(name)
            if column is not None:
                evidence[name] = column[explained]
        said = reasons(self.feature_names, top, contrib, categories, evidence=evidence,
                       known_users=[u in known for u in user_of], known_items=[i in self.catalog for i in item_of])
        return dict(zip(at, said)), dict(zip(at, top_features(self.feature_names, top, contrib)))


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def targets_of(asks: list[Ask]) -> tuple[pl.DataFrame, np.ndarray]:
    """The target rows of requests (request_id = the request's index) and their moments in µs,
    built column by column (a frame from rows of datetimes cost ~1 ms per request)."""
    sizes = [len(a.item_ids) for a in asks]
    ts = np.repeat(np.array([(a.ts - EPOCH) // timedelta(microseconds=1) for a in asks], dtype=np.int64), sizes)
    frame = pl.DataFrame([
        pl.Series("request_id", [str(n) for n, k in enumerate(sizes) for _ in range(k)], pl.String),
        pl.Series("user_id", [a.user_id for a, k in zip(asks, sizes) for _ in range(k)], pl.String),
        pl.Series("item_id", [i for a in asks for i in a.item_ids], pl.String),
        pl.Series("ts", ts).cast(pl.Datetime("us", "UTC")),
    ])
    return frame, ts


def served_record(request_id: str, arm: str, version: str | None, ts: datetime, user_id: str, ranking: Ranking,
                  feature_names: list[str], context: dict) -> dict:
    """One served-features log line: every candidate's feature values and score, columnar, as
    numpy arrays (serving.service.ServedLog writes them with orjson: NaN = null)."""
    return {
        "request_id": request_id, "arm": arm, "model_version": version, "ts": ts.isoformat(), "user_id": user_id,
        "context": context, "item_ids": ranking.item_ids, "scores": np.ascontiguousarray(ranking.scores, dtype=np.float64),
        "shown": [i.item_id for i in ranking.items],
        "features": dict(zip(feature_names, np.ascontiguousarray(ranking.values.T, dtype=np.float64))),
    }

