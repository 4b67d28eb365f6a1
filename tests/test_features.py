from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from features.groups import resolve
from features.history import click_histories
from features.registry import REGISTRY, FeatureContext, compute_features
from recsys.core.errors import RecsysInputError

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def log_frame(rows: list[tuple[str, str, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "request_id": [f"q{n}" for n in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "ts": [at(r[2]) for r in rows],
            "position": [1] * len(rows),
            "clicked": [r[3] for r in rows],
            "rating": [None] * len(rows),
        },
        schema_overrides={"clicked": pl.Int8, "position": pl.Int32, "rating": pl.Float32},
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))


ITEMS = pl.DataFrame({
    "item_id": ["red1", "red2", "blue1", "blue2"],
    "title": ["Red mug", "Red cup", "Blue mug", "Blue cup"],
    "text": ["", "", "", ""],
    "category": ["red", "red", "blue", "blue"],
    "attributes": [None] * 4,
    "created_at": [None] * 4,
}, schema_overrides={"created_at": pl.Datetime("us", "UTC"), "attributes": pl.String})

LOG = log_frame([
    ("u", "red1", 1, 1), ("u", "blue1", 1, 0), ("v", "blue1", 2, 1), ("u", "red2", 30, 1),
    ("v", "red1", 40, 0), ("u", "blue2", 47.5, 1),
])
TARGETS = pl.DataFrame({
    "request_id": ["t1", "t1", "t2", "t2"],
    "user_id": ["u", "u", "w", "w"],
    "item_id": ["red2", "blue2", "red1", "blue1"],
    "ts": [at(48), at(48), at(48), at(48)],
}).with_columns(pl.col("ts").dt.cast_time_unit("us"))
BEHAVIOURAL = ["item_popularity", "user_activity", "user_affinity"]


def features(log: pl.DataFrame, targets: pl.DataFrame = TARGETS) -> pl.DataFrame:
    return compute_features(resolve(BEHAVIOURAL), FeatureContext(targets, log, ITEMS))


def test_known_values() -> None:
    f = features(LOG).sort("request_id", "item_id")
    u_red2 = f.filter((pl.col("user_id") == "u") & (pl.col("item_id") == "red2")).row(0, named=True)
    assert u_red2["item_clicks_all"] == 1 and u_red2["item_clicks_1d"] == 1  # clicked 18 h before
    # CTR priors come from the log before 48 h only: 4 clicks in 6 impressions
    assert u_red2["item_ctr_all"] == pytest.approx((1 + 20 * 4 / 6) / (1 + 20))
    assert u_red2["user_clicks_all"] == 3 and u_red2["user_shown_all"] == 4
    assert u_red2["user_category_clicks"] == 2  # red1 and red2
    assert u_red2["user_item_clicks"] == 1
    assert u_red2["item_days_since_click"] == pytest.approx(18 / 24)
    w_blue1 = f.filter((pl.col("user_id") == "w") & (pl.col("item_id") == "blue1")).row(0, named=True)
    assert w_blue1["user_clicks_all"] == 0 and w_blue1["user_days_since_click"] is None  # unknown user
    assert w_blue1["item_clicks_all"] == 1


def test_future_events_change_nothing() -> None:
    before = features(LOG)
    future = log_frame([("u", "red2", 48, 1), ("w", "blue1", 48, 1), ("v", "red1", 100, 1), ("u", "blue2", 49, 1)])
    after = features(pl.concat([LOG, future]))
    assert before.equals(after)


def test_events_at_the_same_moment_are_not_visible() -> None:
    """A request's own impressions (same ts) must not leak into its features."""
    same = log_frame([("u", "red2", 48, 1)])
    assert features(pl.concat([LOG, same])).equals(features(LOG))


def test_click_histories_are_strictly_before_and_most_recent_last() -> None:
    moments = pl.DataFrame({"user_id": ["u", "u"], "ts": [at(30), at(48)]}).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    h = click_histories(LOG, moments, length=2).sort("ts")
    assert h["history"].to_list() == [["red1"], ["red2", "blue2"]]


def test_every_group_is_declared_with_dtypes_and_descriptions() -> None:
    resolve(BEHAVIOURAL)
    for group in REGISTRY.values():
        assert group.specs, group.name
        for spec in group.specs:
            assert spec.description and spec.dtype is not None


def test_unknown_group_name_is_a_clear_error() -> None:
    with pytest.raises(RecsysInputError, match="unknown feature group"):
        resolve(["item_popularity", "no_such_group"])


class FakeInterest:
    """Scores by whether the candidate's colour matches the last clicked colour."""

    def __init__(self, history_len: int = 10) -> None:
        self.history_len = history_len

    def score(self, histories: list[list[str]], item_ids: list[str]) -> np.ndarray:
        return np.array([float(bool(h) and h[-1][:3] == i[:3]) for h, i in zip(histories, item_ids)])

    def item_vectors(self, item_ids: list[str]) -> np.ndarray:  # red = (1, 0), blue = (0, 1)
        return np.array([[1.0, 0.0] if i.startswith("red") else [0.0, 1.0] for i in item_ids])


def test_interest_group_passes_point_in_time_histories_to_the_scorer() -> None:
    groups = resolve(["interest"])
    f = compute_features(groups, FeatureContext(TARGETS, LOG, ITEMS, {"interest": FakeInterest()}))
    f = f.sort("request_id", "item_id")
    # u's last click before 48 h is blue2 (47.5 h): blue2 matches, red2 does not; w has no history
    assert f["interest_score"].to_list() == [1.0, 0.0, 0.0, 0.0]
    assert f["interest_history_len"].to_list() == [3, 3, 0, 0]
    # u clicked a red and a blue item before: both colours match one of them; w has no history
    assert f["interest_max"].to_list() == [1.0, 1.0, 0.0, 0.0]


def test_interest_histories_are_as_long_as_the_model_was_trained_with() -> None:
    f = compute_features(resolve(["interest"]), FeatureContext(TARGETS, LOG, ITEMS, {"interest": FakeInterest(history_len=2)}))
    assert f.sort("request_id", "item_id")["interest_history_len"].to_list() == [2, 2, 0, 0]


def test_topic_ctr_is_how_items_of_the_topic_fare_and_the_users_ctr_shrinks_towards_it() -> None:
    # two text topics: "warm" items are clicked whenever shown, "cold" ones never; "new" items
    # of each topic were never shown, so only their topic speaks for them
    topics = pl.DataFrame({"item_id": ["red1", "red2", "blue1", "blue2"], "topic": ["warm", "warm", "cold", "cold"]})
    log = log_frame([(f"r{n}", "red1", n, 1) for n in range(10)] + [(f"b{n}", "blue1", n, 0) for n in range(10)]
                    + [("u", "blue1", 11, 1)])
    targets = pl.DataFrame({"request_id": ["tu", "tu", "tw", "tw"], "user_id": ["u", "u", "w", "w"], "item_id": ["red2", "blue2"] * 2,
                            "ts": [at(12)] * 4}).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    f = compute_features(resolve(["user_topic"]), FeatureContext(targets, log, ITEMS, {"topics": topics}))
    row = {(r["user_id"], r["item_id"]): r for r in f.iter_rows(named=True)}
    prior = 11 / 21  # the log's CTR before 12 h
    assert row["w", "red2"]["topic_ctr"] == pytest.approx((10 + 20 * prior) / (10 + 20))
    assert row["w", "blue2"]["topic_ctr"] == pytest.approx((1 + 20 * prior) / (11 + 20))
    # a user who never saw the topic gets the topic's rate, not the global one
    assert row["w", "red2"]["user_topic_ctr"] == pytest.approx(row["w", "red2"]["topic_ctr"])
    assert row["w", "red2"]["user_topic_ctr"] > row["w", "blue2"]["user_topic_ctr"]
    # u clicked the one cold item shown to them: pulled up from the topic's rate, by one impression's weight
    cold = row["u", "blue2"]["topic_ctr"]
    assert row["u", "blue2"]["user_topic_ctr"] == pytest.approx((1 + 20 * cold) / (1 + 20), rel=1e-6)


def test_the_events_of_the_candidates_topics_are_all_a_cut_log_needs() -> None:
    """Serving's point-in-time path reads a log cut down to the request's user and the items
    `items_read` names: the topic sums must come out as over the whole log."""
    from features.behavioural import items_read
    from features.pointintime import global_totals

    topics = pl.DataFrame({"item_id": ["red1", "red2", "blue1", "blue2"], "topic": ["warm", "warm", "cold", "cold"]})
    targets = TARGETS.filter(pl.col("user_id") == "u")
    whole = compute_features(resolve(["user_topic"]), FeatureContext(targets, LOG, ITEMS, {"topics": topics}))
    read = items_read(topics, targets["item_id"].to_list())
    assert read == ["blue1", "blue2", "red1", "red2"]  # red2 and blue2 bring their topics' other items
    cut = LOG.filter(pl.col("user_id").is_in(["u"]) | pl.col("item_id").is_in(read))
    served = compute_features(resolve(["user_topic"]), FeatureContext(targets, cut, ITEMS, {"topics": topics}, global_totals(LOG)))
    assert served.equals(whole)
    # the candidates' own events alone miss v's impression of red1: its topic's rate changes
    alone = LOG.filter(pl.col("user_id").is_in(["u"]) | pl.col("item_id").is_in(targets["item_id"].to_list()))
    short = compute_features(resolve(["user_topic"]), FeatureContext(targets, alone, ITEMS, {"topics": topics}, global_totals(LOG)))
    assert not short.equals(whole)


def test_topic_totals_follow_events_taken_in_after_the_first_read() -> None:
    """The live state's topic sums are made once, then kept up to date from each batch of
    feedback: after every batch they equal a fresh state's."""
    from features.behavioural import topic_totals
    from features.state import LogState

    topics = pl.DataFrame({"item_id": ["red1", "red2", "blue1", "blue2"], "topic": ["warm", "warm", "cold", "cold"]})
    live = LogState.of(LOG.head(2), ITEMS)
    assert topic_totals(live, topics) == {"warm": [1.0, 1.0], "cold": [0.0, 1.0]}
    for start, length in ((2, 1), (3, 2), (5, 1)):  # feedback in three batches, one out of order
        batch = LOG.slice(start, length)
        live.add(batch.reverse())
        fresh = LogState.of(LOG.head(start + length), ITEMS)
        assert topic_totals(live, topics) == topic_totals(fresh, topics)
    assert topic_totals(live, topics) == {"warm": [2.0, 3.0], "cold": [2.0, 3.0]}



def test_a_trails_reads_hold_over_the_span_they_give_at_any_moment_after_adds_and_folds() -> None:
    """`ItemMemo` answers from a read for every moment in the span (lo, hi] the read gave: a
    fresh read at any such moment must give the same values, beside every window edge."""
    from features.state import Trail

    rng = np.random.default_rng(3)
    day, week, spans = 1_000, 7_000, (500, 3_000)  # µs: small, so moments often cross an event's window edge

    def reads(trail: Trail, before: int) -> list[tuple]:
        return [trail.popularity(before, before - day, before - week), trail.clicks_since(before, tuple(before - s for s in spans))]

    trail = Trail()
    held = 0
    for step in range(600):
        if step % 60 == 0:  # the trail changes: events (late ones too), once a fold
            trail.add(rng.integers(0, 20_000, 30), (rng.random(30) < 0.3).astype(np.float64))
            if step == 300:
                trail.fold(2_000)
        # a read just beside a window edge (an event's time plus a span), then one a few µs away
        edge = int(rng.choice(np.frombuffer(trail.ts, np.int64))) + int(rng.choice([0, day, week, *spans]))
        first = max(edge + int(rng.integers(-2, 3)), 10_000)
        later = first + int(rng.integers(-3, 4))
        for (lo, hi, values), (_, _, fresh) in zip(reads(trail, first), reads(trail, later)):
            assert lo < first <= hi, (step, first, lo, hi)
            if lo < later <= hi:
                held += 1
                assert values == fresh, (step, first, later)
    assert held > 300  # most nearby moments fall in the span: the check above ran

    sparse = Trail.of(np.array([0, 1_000, 10_000, 30_000]), np.ones(4))
    sparse.fold(5_000)
    # its windows start after the fold: fine, and its span stops short of moments whose week the fold cut off
    popularity_from = reads(sparse, 12_500)[0][0]
    assert 11_400 < popularity_from < 12_500
    with pytest.raises(AssertionError, match="folded"):
        reads(sparse, 11_400)  # its week starts at 4,400: folded away


def test_ranks_within_requests_of_several_columns_at_once_equal_polars_average_rank_per_column() -> None:
    from features.context import _rank_average

    rng = np.random.default_rng(5)
    request = rng.integers(0, 4, 80)
    values = rng.integers(0, 6, (80, 5)).astype(np.float64)  # many ties, inside and across requests
    ranks = _rank_average(values, request)
    for j in range(values.shape[1]):
        expected = pl.DataFrame({"v": values[:, j], "r": request}).select(pl.col("v").rank("average").over("r"))["v"]
        assert np.array_equal(ranks[:, j], expected.to_numpy())
        assert np.array_equal(_rank_average(values[:, j], request), ranks[:, j])
    assert _rank_average(np.zeros((0, 5)), np.zeros(0, np.int64)).shape == (0, 5)  # no rows: no ranks, no error
