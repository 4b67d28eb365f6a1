"""The blurb feature group: one row per target, declared columns, point-in-time histories."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

import features.blurbs  # noqa: F401  (registers the group)
from features.blurbs import histories
from features.registry import REGISTRY, FeatureContext, compute_features
from recsys.core.schemas import EVENTS_SCHEMA

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
COLOURS = ["red", "blue", "green"]


class FakeInterest:
    """Texts map to one-hot colour vectors; a user vector is the mean over their history's colours."""

    def __init__(self, item_colour: dict[str, str]) -> None:
        self.item_colour = item_colour
        self.calls: list[list[list[str]]] = []
        self.history_len = 10

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.array([[float(c in t.lower()) for c in COLOURS] for t in texts])

    def user_vectors(self, hists: list[list[str]]) -> np.ndarray:
        self.calls.append(hists)
        return np.array([np.mean([[float(self.item_colour[i] == c) for c in COLOURS] for i in h], axis=0)
                         for h in hists])


def _events(rows: list[tuple[str, str, int, int]]) -> pl.DataFrame:
    """rows: (user, item, minutes after T0, clicked)"""
    return pl.DataFrame({
        "request_id": [f"r{k}" for k in range(len(rows))], "user_id": [r[0] for r in rows],
        "item_id": [r[1] for r in rows], "ts": [T0 + timedelta(minutes=r[2]) for r in rows],
        "position": [1] * len(rows), "clicked": [r[3] for r in rows], "rating": [None] * len(rows),
    }, schema=EVENTS_SCHEMA)


@pytest.fixture
def ctx() -> tuple[FeatureContext, FakeInterest]:
    colour = {"a": "red", "b": "red", "c": "blue", "x": "red", "y": "blue"}
    log = _events([("u1", "a", 0, 1), ("u1", "c", 5, 0), ("u1", "b", 10, 1), ("u1", "c", 20, 1), ("u2", "c", 1, 1)])
    targets = pl.DataFrame({
        "request_id": ["q1", "q1", "q2", "q3", "q4"], "user_id": ["u1", "u1", "u1", "u2", "u3"],
        "item_id": ["x", "y", "x", "y", "x"],
        "ts": [T0 + timedelta(minutes=m) for m in (10, 10, 30, 30, 30)],
    })
    blurbs = pl.DataFrame({
        "item_id": ["x", "y"], "blurb": ["A red mug for tea.", "A blue lamp for reading, made of oak."],
        "source": ["generated", "fallback"], "flag_reason": [None, "invented_colour"],
        "model_version": ["v", "v"], "text_hash": ["h1", "h2"],
    })
    scorer = FakeInterest(colour)
    items = pl.DataFrame({"item_id": list(colour)})
    return FeatureContext(targets, log, items, {"blurbs": blurbs, "interest": scorer}), scorer


def test_histories_are_strictly_before_the_row_and_capped() -> None:
    log = _events([("u", f"i{k}", k, 1) for k in range(15)] + [("u", "skip", 3, 0)])
    targets = pl.DataFrame({"user_id": ["u", "u", "u", "nobody"],
                            "ts": [T0 + timedelta(minutes=m) for m in (0, 3, 100, 100)]})
    got = histories(targets, log, k=10)
    assert got[0] == []  # the click at exactly ts is not in the past
    assert got[1] == ["i0", "i1", "i2"]  # non-clicks are not history
    assert got[2] == [f"i{k}" for k in range(5, 15)]  # last 10, most recent last
    assert got[3] == []


def test_group_output_shape_values_and_point_in_time(ctx: tuple[FeatureContext, FakeInterest]) -> None:
    context, scorer = ctx
    group = REGISTRY["blurb"]
    assert group.requires == ("blurbs", "interest")
    out = compute_features([group], context)
    assert out.height == context.targets.height
    assert out.columns == ["request_id", "user_id", "item_id", "ts", "blurb_interest", "blurb_words", "blurb_fallback"]
    assert out.schema["blurb_interest"] == pl.Float32 and out.schema["blurb_words"] == pl.Int32
    assert out.schema["blurb_fallback"] == pl.Int8
    got = {(r["request_id"], r["item_id"]): r for r in out.iter_rows(named=True)}
    # q1 at minute 10: u1's history is [a] (b is clicked at exactly 10): all red.
    assert got[("q1", "x")]["blurb_interest"] == pytest.approx(1.0)
    assert got[("q1", "y")]["blurb_interest"] == pytest.approx(0.0)
    # q2 at minute 30: history [a, b, c] = 2 red, 1 blue.
    assert got[("q2", "x")]["blurb_interest"] == pytest.approx(2 / 3)
    assert got[("q3", "y")]["blurb_interest"] == pytest.approx(1.0)
    assert got[("q4", "x")]["blurb_interest"] is None  # u3 has no history
    assert [got[k]["blurb_words"] for k in (("q1", "x"), ("q1", "y"))] == [5, 8]
    assert [got[k]["blurb_fallback"] for k in (("q1", "x"), ("q1", "y"))] == [0, 1]
    assert sorted(map(tuple, scorer.calls[0])) == [("a",), ("a", "b", "c"), ("c",)]  # one vector per distinct history


def test_item_without_blurb_gets_missing_score_and_fallback_flag(ctx: tuple[FeatureContext, FakeInterest]) -> None:
    context, _ = ctx
    targets = context.targets.with_columns(item_id=pl.lit("unknown"))
    frame = REGISTRY["blurb"].compute(FeatureContext(targets, context.log, context.items, context.artefacts))
    assert frame["blurb_interest"].null_count() == frame.height
    assert frame["blurb_words"].to_list() == [0] * frame.height and frame["blurb_fallback"].to_list() == [1] * frame.height
