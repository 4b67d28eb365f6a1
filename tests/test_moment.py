"""The counters twins (`at_moment`, serving and batch scoring) give exactly the features of the
point-in-time polars groups (training) for moments after the log, on random logs."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.collaborative import fit_ease
from features.registry import REGISTRY, FeatureContext, MomentContext, compute_at_moment, compute_features, load_all
from features.state import LogState, micros
from recsys.schemas import EVENTS_SCHEMA, ITEMS_SCHEMA

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
USERS = ["u0", "u1", "u2", "u3"]
ITEMS = ["i0", "i1", "i2", "i3", "i4", "gone"]  # "gone" is in the log, not in the catalog
CATALOG = pl.DataFrame({
    "item_id": ["i0", "i1", "i2", "i3", "i4", "new"],  # "new" is in the catalog, never shown
    "title": ["Red mug", "Red cup", "Blue mug", "Blue cup", "Lamp", "New lamp"],
    "text": ["red mug", "red cup", "blue mug", "blue cup", "a lamp", "a new lamp"],
    "category": ["red", "red", "blue", "blue", None, "lamps"],
    "attributes": [None] * 6,
    "created_at": [None, T0 - timedelta(days=3), None, T0 + timedelta(days=20), None, T0 + timedelta(days=2, seconds=-0.5)],
}, schema=ITEMS_SCHEMA)
BLURBS = pl.DataFrame({
    "item_id": ["i0", "i1", "i2", "i2", "new"],
    "blurb": ["A red mug for tea.", "A cup, 250 ml.", "Old words.", "A blue mug, sturdy and plain.", None],
    "source": ["generated", "extractive", "generated", "generated", "extractive"],
})


class HashedInterest:
    """A stand-in interest model: fixed pseudo-random unit vectors per item id and per text; a
    user is the recency-weighted mean of the history, so the order of clicks matters."""

    def _vec(self, key: str) -> np.ndarray:
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
        v = rng.normal(size=8).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vec("text:" + t) for t in texts]) if texts else np.zeros((0, 8), np.float32)

    def item_vectors(self, item_ids: list[str]) -> np.ndarray:
        return np.stack([self._vec(i) for i in item_ids]) if item_ids else np.zeros((0, 8), np.float32)

    def user_vectors(self, histories: list[list[str]]) -> np.ndarray:
        return np.stack([
            np.average([self._vec(i) for i in h], axis=0, weights=np.arange(1, len(h) + 1)) if h else self._vec("unknown")
            for h in histories
        ])

    def score(self, histories: list[list[str]], item_ids: list[str]) -> np.ndarray:
        users = self.user_vectors(histories)
        return np.einsum("nd,nd->n", users, np.stack([self._vec(i) for i in item_ids]).reshape(len(item_ids), -1))


TOPICS = pl.DataFrame({"item_id": ["i0", "i1", "i2", "i3", "new"], "topic": ["t0", "t1", "t0", "t1", "t2"]})  # i4: no topic
ARTEFACTS = {"interest": HashedInterest(), "blurbs": BLURBS, "topics": TOPICS, "time_scale": {"recent_us": 2 * 86_400_000_000}}
event_rows = st.lists(
    st.tuples(st.sampled_from(USERS), st.sampled_from(ITEMS),
              st.integers(0, 12 * 24 * 3600 * 1_000_000 // 7_000_000).map(lambda k: k * 7_000_000),  # ~12 days, ties likely
              st.integers(0, 1)),
    min_size=0, max_size=60,
)


def events(rows: list[tuple[str, str, int, int]]) -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": [f"r{n}" for n in range(len(rows))], "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
        "ts": [T0 + timedelta(microseconds=r[2]) for r in rows], "position": [None] * len(rows),
        "clicked": [r[3] for r in rows], "rating": [None] * len(rows),
    }, schema=EVENTS_SCHEMA)


def both(log: pl.DataFrame, state: LogState, targets: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    groups = [g for g in load_all().values()]
    assert all(g.has_twin for g in groups), "every registered group has a twin"
    ts = micros(targets["ts"])
    assert state.before(ts)
    # serving's item-item weights are the fit of the whole log (what the point-in-time group fits
    # for moments after it)
    artefacts = {**ARTEFACTS, "cf": fit_ease(log)}
    return (compute_features(groups, FeatureContext(targets, log, CATALOG, artefacts)),
            compute_at_moment(groups, MomentContext(targets, ts, state, artefacts)))


@settings(max_examples=int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=event_rows,
    cuts=st.lists(st.integers(0, 60), max_size=3),
    shuffle=st.randoms(use_true_random=False),
    after=st.lists(st.integers(1, 9 * 24 * 3600 * 1_000_000), min_size=1, max_size=3),
    pairs=st.lists(st.tuples(st.sampled_from([*USERS, "stranger"]), st.sampled_from([*ITEMS, "new", "unheard"])),
                   min_size=1, max_size=12, unique=True),
)
def test_counters_give_the_point_in_time_features(rows, cuts, shuffle, after, pairs) -> None:  # noqa: ANN001
    log = events(rows)
    # the state takes the log in pieces, in shuffled order: late events, appends, empty pieces
    order = list(range(log.height))
    shuffle.shuffle(order)
    state = LogState(CATALOG)
    bounds = sorted({0, log.height, *[min(c, log.height) for c in cuts]})
    for start, end in zip(bounds, bounds[1:]):
        state.add(log[order[start:end]])
    assert state.rows == log.height
    last = log["ts"].max() or T0
    moments = [last + timedelta(microseconds=a) for a in after]  # one moment per request, all after the log
    targets = pl.DataFrame({
        "request_id": [f"q{m}-{u}" for m in range(len(moments)) for u, _ in pairs],  # (request_id, item_id) unique
        "user_id": [u for _ in moments for u, _ in pairs],
        "item_id": [i for _ in moments for _, i in pairs],
        "ts": [m for m in moments for _ in pairs],
    }, schema={"request_id": pl.String, "user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")})
    polars_path, counters = both(log, state, targets)
    assert_frame_equal(counters, polars_path)


def test_state_refuses_moments_not_after_its_log() -> None:
    state = LogState.of(events([("u0", "i0", 5_000_000, 1)]), CATALOG)
    assert state.before(np.array([5_000_001 + micros(T0)[0]]))
    assert not state.before(np.array([5_000_000 + micros(T0)[0]]))  # strictly after, or the event would count
    assert state.users["u0"].history(10) == ["i0"] and state.users["u0"].clicks == 1.0


def test_every_twin_is_declared_once() -> None:
    from features.registry import at_moment

    load_all()
    with pytest.raises(ValueError, match="one twin"):
        at_moment("item_popularity")(lambda ctx: {})
    with pytest.raises(ValueError, match="register the group first"):
        at_moment("no-such-group")(lambda ctx: {})
    assert REGISTRY["item_popularity"].at_moment is not None
