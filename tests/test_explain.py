"""Reasons from per-feature contributions: the right phrase, and only when it is true."""

from __future__ import annotations

import numpy as np

from serving.explain import reasons, top_features

FEATURES = ["item_clicks_7d", "item_age_days", "user_category_clicks", "user_ctr"]


def test_the_biggest_true_push_is_named_with_the_category() -> None:
    values = np.array([[12.0, 3.0, 5.0, 0.1]])
    contrib = np.array([[0.05, 0.01, 0.30, 0.9, -0.2]])  # user_ctr pushes most but says nothing about the item
    assert reasons(FEATURES, values, contrib, ["mugs"]) == ["You often choose mugs"]


def test_a_phrase_is_not_said_when_the_value_contradicts_it() -> None:
    old = np.array([[0.0, 400.0, 0.0, 0.1]])  # a positive push from a 400-day-old item is not "new"
    contrib = np.array([[0.0, 0.5, 0.0, 0.0, 0.0]])
    assert reasons(FEATURES, old, contrib, [None]) == [None]
    new = np.array([[0.0, 2.0, 0.0, 0.1]])
    assert reasons(FEATURES, new, contrib, [None]) == ["New in the shop"]


def test_two_reasons_when_both_carry_weight_and_missing_values_are_skipped() -> None:
    values = np.array([[30.0, np.nan, 4.0, 0.1]])
    contrib = np.array([[0.4, 0.9, 0.3, 0.0, 0.0]])
    assert reasons(FEATURES, values, contrib, ["lamps"]) == ["Popular this week; you often choose lamps"]
    top = top_features(FEATURES, values, contrib, k=2)[0]
    assert top == [("item_age_days", None, 0.9), ("item_clicks_7d", 30.0, 0.4)]
