"""Reasons from per-feature contributions: the right phrase, and only when it is true."""

from __future__ import annotations

import numpy as np
import pytest

from serving.explain import category_phrase, reasons, top_features

FEATURES = ["item_clicks_7d", "item_age_days", "user_category_clicks", "user_ctr"]


def test_the_biggest_true_push_is_named_with_the_category() -> None:
    values = np.array([[12.0, 3.0, 5.0, 0.1]])
    contrib = np.array([[0.05, 0.01, 0.30, 0.9, -0.2]])  # user_ctr pushes most but says nothing about the item
    assert reasons(FEATURES, values, contrib, ["mug"]) == ["You often pick mugs"]
    assert reasons(FEATURES, values, contrib, ["t-shirt"]) == ["You often pick T-shirts"]


def test_a_phrase_is_not_said_when_the_value_contradicts_it() -> None:
    old = np.array([[0.0, 400.0, 0.0, 0.1]])  # a positive push from a 400-day-old item is not "new"
    contrib = np.array([[0.0, 0.5, 0.0, 0.0, 0.0]])
    assert reasons(FEATURES, old, contrib, [None]) == [None]
    new = np.array([[0.0, 2.0, 0.0, 0.1]])
    assert reasons(FEATURES, new, contrib, [None]) == ["New in the shop"]


def test_two_reasons_when_both_carry_weight_and_missing_values_are_skipped() -> None:
    values = np.array([[30.0, np.nan, 4.0, 0.1]])
    contrib = np.array([[0.4, 0.9, 0.3, 0.0, 0.0]])
    assert reasons(FEATURES, values, contrib, ["lamp"]) == ["Popular this week; you often pick lamps"]
    top = top_features(FEATURES, values, contrib, k=2)[0]
    assert top == [("item_age_days", None, 0.9), ("item_clicks_7d", 30.0, 0.4)]


# what the served path sends: smoothed rates that are positive for anyone, and the counts behind them
SERVED = ["item_ctr_7d", "item_ctr_all", "item_age_days", "user_category_share", "user_category_ctr", "interest_score",
          "blurb_interest", "item_is_new"]


def served_row(**counts: float | None) -> dict[str, np.ndarray]:
    base = {"item_clicks_7d": 0.0, "item_clicks_all": 0.0, "user_category_clicks": 0.0, "user_clicks_all": 0.0,
            "interest_history_len": 0.0}
    return {k: np.array([v], dtype=object) for k, v in {**base, **counts}.items()}


def push_everything() -> tuple[np.ndarray, np.ndarray]:
    values = np.array([[0.04, 0.04, 0.0, 0.125, 0.04, 0.3, 0.2, 1.0]])  # priors, the default age 0, never shown
    return values, np.full((1, len(SERVED) + 1), 0.1)


def test_an_unknown_item_gets_no_false_reason() -> None:
    """The issue's case: an id the catalog lacks, no events, no category, age missing (or its
    default, 0); every feature pushed up. Smoothed CTRs at the prior are not "often clicked", an
    unknown item has no text to be "similar", and a default age is not "new in the shop"."""
    values, contrib = push_everything()
    facts = served_row(user_category_clicks=9.0, user_clicks_all=20.0, interest_history_len=10.0)
    for age in (0.0, np.nan, None):
        values[0, 2] = np.nan if age is None else age
        said = reasons(SERVED, values, contrib, [None], evidence=facts, known_users=[True], known_items=[False])
        assert said == [None], (age, said)


def test_an_unknown_user_gets_no_personal_reason() -> None:
    values, contrib = push_everything()
    values[0, 2] = 3.0  # a new item: that much is true of anyone
    known_item = served_row(item_clicks_7d=40.0, item_clicks_all=90.0)
    said = reasons(SERVED, values, contrib, ["t-shirt"], evidence=known_item, known_users=[False], known_items=[True])
    assert said == ["New in the shop; often clicked this week"]  # age and never-shown add up
    # the counts alone say it too, without being told who is known
    alone = reasons(SERVED, values, contrib, ["t-shirt"], evidence=known_item)
    assert alone == said and "pick" not in alone[0] and "you" not in alone[0].lower()


def test_an_item_without_a_category_is_not_said_to_be_in_one() -> None:
    values, contrib = push_everything()
    contrib[0, :3] = contrib[0, 7] = 0.0
    regular = served_row(user_category_clicks=6.0, user_clicks_all=10.0, interest_history_len=10.0)
    for category in (None, "", "?", float("nan")):
        said = reasons(SERVED, values, contrib, [category], evidence=regular, known_users=[True], known_items=[True])
        assert said == ["Similar to items you clicked; its description matches your interests"], (category, said)
    said = reasons(SERVED, values, contrib, ["water bottle"], evidence=regular, known_users=[True], known_items=[True])
    assert said == ["You often pick water bottles; similar to items you clicked"]


def test_category_clicks_that_are_not_often_are_not_called_often() -> None:
    values, contrib = push_everything()
    contrib[0, :3] = contrib[0, 5:] = 0.0
    for clicks, total in ((0.0, 0.0), (1.0, 1.0), (2.0, 40.0)):  # none, once, 5% of the user's clicks
        said = reasons(SERVED, values, contrib, ["mug"], evidence=served_row(user_category_clicks=clicks, user_clicks_all=total))
        assert said == [None], (clicks, total, said)
    said = reasons(SERVED, values, contrib, ["mug"], evidence=served_row(user_category_clicks=3.0, user_clicks_all=6.0))
    assert said == ["You often pick mugs"]


def test_unknown_features_and_missing_values_are_tolerated() -> None:
    features = ["item_cold_bucket", "known_item", "item_clicks_7d", "something_else"]
    values = np.array([[1.0, 0.0, np.nan, 5.0], [np.nan, np.nan, np.nan, np.nan]])
    contrib = np.array([[0.3, 0.2, 0.5, 0.1, 0.0], [0.3, np.nan, 0.2, 0.1, 0.0]])
    assert reasons(features, values, contrib, [None, None], evidence={"item_clicks_7d": [None, float("nan")]}) == [None, None]
    assert top_features(features, values, contrib, k=1) == [[("item_clicks_7d", None, 0.5)], [("item_cold_bucket", None, 0.3)]]


@pytest.mark.parametrize(("category", "phrase"), [
    ("mug", "mugs"), ("t-shirt", "T-shirts"), ("water bottle", "water bottles"), ("headphones", "headphones"),
    ("accessory", "accessories"), ("watch", "watches"), ("glass", "glasses"), ("knife", "knives"), ("toy", "toys"),
    ("news", "news"), ("music", "items like this"), ("Comedy", "items like this"), ("Home & Kitchen", "items like this"),
    ("cat_07", "items like this"), ("tv", "items like this"), (None, None), ("  ", None), ("?", None),
])
def test_category_names_read_naturally_or_fall_back(category: str | None, phrase: str | None) -> None:
    assert category_phrase(category) == phrase


def test_collaborative_topic_and_trend_reasons_need_their_evidence() -> None:
    features = ["cf_score", "user_topic_share", "item_trend"]
    values = np.array([[0.4, 0.6, 3.0], [0.0, 0.6, 3.0]])
    contrib = np.array([[0.5, 0.0, 0.0, 0.0], [0.0, 0.4, 0.3, 0.0]])
    evidence = {"user_topic_clicks": [5.0, 0.0], "item_clicks_recent": [0.0, 1.0]}
    got = reasons(features, values, contrib, [None, None], evidence=evidence)
    # row 1: no topic clicks behind the smoothed share, one recent click is not a trend
    assert got == ["People who clicked what you clicked chose it too", None]
    assert reasons(features, values[:1], contrib[:1], [None], known_users=[False]) == [None]
    evidence = {"user_topic_clicks": [5.0], "item_clicks_recent": [9.0]}
    assert reasons(features, values[1:], contrib[1:], [None], evidence=evidence) == ["You often read about this; trending"]
