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
from features.groups import load_all
from features.registry import REGISTRY, FeatureContext, MomentContext, compute_at_moment, compute_features
from features.state import LogState, micros
from recsys.core.schemas import EVENTS_SCHEMA, ITEMS_SCHEMA

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

    history_len = 10

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


# a log taken in pieces, moments after it, and (user, item) pairs to ask about
STREAM = dict(
    rows=event_rows,
    cuts=st.lists(st.integers(0, 60), max_size=3),
    shuffle=st.randoms(use_true_random=False),
    after=st.lists(st.integers(1, 9 * 24 * 3600 * 1_000_000), min_size=1, max_size=3),
    pairs=st.lists(st.tuples(st.sampled_from([*USERS, "stranger"]), st.sampled_from([*ITEMS, "new", "unheard"])),
                   min_size=1, max_size=12, unique=True),
)


@settings(max_examples=int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(**STREAM)
def test_counters_give_the_point_in_time_features(rows, cuts, shuffle, after, pairs) -> None:
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


# --- bounded counters (issue 20): folded past the longest window, histories capped ------------------

from features.behavioural import horizon_of  # noqa: E402
from features.state import KEPT_CLICKS  # noqa: E402

DAY = 86_400_000_000


@settings(max_examples=int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "150")) // 3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(**STREAM)
def test_folded_counters_give_the_point_in_time_features(rows, cuts, shuffle, after, pairs) -> None:
    """As above, with the counters folded past the run's horizon while the pieces (late ones
    too, some older than the fold) come in: the ~12 days of events outlast the 7-day horizon."""
    log = events(rows)
    order = list(range(log.height))
    shuffle.shuffle(order)
    state = LogState(CATALOG)
    state.set_horizon(horizon_of(ARTEFACTS))
    bounds = sorted({0, log.height, *[min(c, log.height) for c in cuts]})
    for start, end in zip(bounds, bounds[1:]):
        state.add(log[order[start:end]])
    state.fold()
    last = log["ts"].max() or T0
    moments = [last + timedelta(microseconds=a) for a in after]
    targets = pl.DataFrame({
        "request_id": [f"q{m}-{u}" for m in range(len(moments)) for u, _ in pairs],
        "user_id": [u for _ in moments for u, _ in pairs], "item_id": [i for _ in moments for _, i in pairs],
        "ts": [m for m in moments for _ in pairs],
    }, schema={"request_id": pl.String, "user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")})
    polars_path, counters = both(log, state, targets)
    assert_frame_equal(counters, polars_path)


@settings(max_examples=int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "150")) // 3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(**STREAM)
def test_counters_read_between_pieces_of_feedback_give_the_point_in_time_features(rows, cuts, shuffle, after, pairs) -> None:
    """A live state is read after every piece of feedback (late events too, and folds): what a
    read memoized (`features.state.ItemMemo`, kept across pieces for the items they did not
    touch) always equals the polars features of the log taken in so far."""
    log = events(rows)
    order = list(range(log.height))
    shuffle.shuffle(order)
    state = LogState(CATALOG)
    state.set_horizon(horizon_of(ARTEFACTS))
    bounds = sorted({0, log.height, *[min(c, log.height) for c in cuts], *range(0, log.height, 7)})
    taken: list[int] = []
    for start, end in zip(bounds, bounds[1:]):
        state.add(log[order[start:end]])
        taken += order[start:end]
        so_far = log[sorted(taken)]
        last = so_far["ts"].max() or T0
        for a in after:  # one request per moment, in turn, each reading the memos the last left
            targets = pl.DataFrame({
                "request_id": [f"q-{u}" for u, _ in pairs], "user_id": [u for u, _ in pairs],
                "item_id": [i for _, i in pairs], "ts": [last + timedelta(microseconds=a)] * len(pairs),
            }, schema={"request_id": pl.String, "user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")})
            polars_path, counters = both(so_far, state, targets)
            assert_frame_equal(counters, polars_path)


def stream(days: int, per_day: int = 40, seed: int = 0) -> pl.DataFrame:
    """`per_day` events a day at random moments, every user and item, a click in four."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    return events(sorted(zip(rng.choice(USERS, n).tolist(), rng.choice(ITEMS, n).tolist(),
                             (np.arange(n) * (DAY // per_day) + rng.integers(0, DAY // per_day, n)).tolist(),
                             (rng.random(n) < 0.25).astype(int).tolist()), key=lambda r: r[2]))


def targets_after(log: pl.DataFrame) -> pl.DataFrame:
    moment = log["ts"].max() + timedelta(hours=1)
    return pl.DataFrame({
        "request_id": [f"q-{u}" for u in USERS for _ in ITEMS], "user_id": [u for u in USERS for _ in ITEMS],
        "item_id": [i for _ in USERS for i in ITEMS], "ts": [moment] * (len(USERS) * len(ITEMS)),
    }, schema={"request_id": pl.String, "user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")})


def test_a_long_stream_keeps_folded_counters_flat_and_the_features_equal() -> None:
    """60 days of feedback a day at a time: with the run's 7-day horizon the counters hold the
    same at day 30 and day 60 (unfolded they double), and the features are the polars ones."""
    log = stream(60)
    day = (log["ts"] - T0).dt.total_days()
    folded, whole = LogState(CATALOG), LogState(CATALOG)
    folded.set_horizon(horizon_of(ARTEFACTS))
    sizes = {}
    for d in range(60):
        piece = log.filter(day == d)
        folded.add(piece)
        whole.add(piece)
        if d + 1 in (30, 60):
            sizes[d + 1] = (folded.size(), whole.size())
    (f30, w30), (f60, w60) = sizes[30], sizes[60]
    assert w60["item_moments"] > 1.9 * w30["item_moments"]  # unfolded: every event kept
    assert f60["item_moments"] <= f30["item_moments"] + 40 and f60["item_moments"] < 10 * 40  # about 8 days of them
    assert f60["bytes"] <= 1.05 * f30["bytes"] and f60["kept_clicks"] <= len(USERS) * 2 * KEPT_CLICKS
    polars_path, counters = both(log, folded, targets_after(log))
    assert_frame_equal(counters, polars_path)
    assert_frame_equal(compute_at_moment(list(load_all().values()), MomentContext(
        targets_after(log), micros(targets_after(log)["ts"]), whole, {**ARTEFACTS, "cf": fit_ease(log)})), counters)


def test_a_horizon_shorter_than_a_window_fails_loudly_instead_of_counting_wrong() -> None:
    log = stream(12)
    state = LogState(CATALOG)
    state.set_horizon(DAY)  # item_popularity reads 7 days
    state.add(log)
    with pytest.raises(AssertionError, match="reaches before"):
        both(log, state, targets_after(log))


def test_histories_are_capped_and_stay_exact_with_late_clicks() -> None:
    """One user with many more clicks than kept, some arriving late and out of order: the last
    10 (interest, blurbs) and the set ever clicked (collaborative) are the polars ones."""
    rng = np.random.default_rng(3)
    n = 8 * KEPT_CLICKS
    rows = list(zip(["u0"] * n, rng.choice(ITEMS, n).tolist(), (rng.integers(0, 400, n) * 7_000_000).tolist(), [1] * n))
    log = events(rows)
    state = LogState(CATALOG)
    order = rng.permutation(n)
    for piece in np.array_split(order, 16):
        state.add(log[piece.tolist()])
    assert len(state.users["u0"]._click_ts) < 2 * KEPT_CLICKS and state.users["u0"].clicks == n
    polars_path, counters = both(log, state, targets_after(log))
    assert_frame_equal(counters, polars_path)
    with pytest.raises(AssertionError, match="keeps the last"):
        state.users["u0"].history(3 * KEPT_CLICKS)


def test_rows_by_user_gives_each_users_rows_in_order_for_a_request_and_for_a_batch() -> None:
    from features.behavioural import rows_by_user

    for n in (100, 5000):  # a request's rows (a dict) and a batch's (a polars group_by)
        users = [f"u{(k * 7) % 13}" for k in range(n)]
        expected: dict[str, list[int]] = {}
        for row, user in enumerate(users):
            expected.setdefault(user, []).append(row)
        got = {user: rows.tolist() for user, rows in rows_by_user(pl.DataFrame({"user_id": users}))}
        assert got == expected


def test_rows_by_history_groups_by_value_whatever_lists_the_rows_hand_over() -> None:
    """Shared list objects (a request's rows) and a fresh list per row (a polars Series hands
    those out, and a freed list's id is reused) group the same."""
    from features.history import rows_by_history

    shared = [["a"], ["b", "a"]]
    rows = [shared[k % 2] for k in range(6)]
    assert rows_by_history(rows) == {("a",): [0, 2, 4], ("b", "a"): [1, 3, 5]}
    fresh = pl.Series([[str(k)] for k in range(2000)])
    grouped = rows_by_history(fresh)
    assert len(grouped) == 2000 and grouped[("7",)] == [7]
