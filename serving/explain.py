"""Human-readable reasons from the ranker's per-feature contributions (LightGBM pred_contrib).

Each feature maps to a phrase; contributions of features sharing a phrase add up; an item's
reason is the phrase(s) that pushed its score up the most. Features that describe the user
rather than the item (activity, CTR) say nothing about why *this* item, so they have no phrase.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

def _positive(v: float) -> bool:
    return v > 0


def _within(days: float) -> Callable[[float], bool]:
    return lambda v: v <= days


# feature -> (phrase, when the phrase is true of the value): a contribution can be positive for
# an old item too, and "new in the shop" must not be said of it
PHRASES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "interest_score": ("similar to items you clicked", _positive),
    "blurb_interest": ("its description matches your interests", _positive),
    "item_clicks_1d": ("trending today", _positive),
    "item_clicks_7d": ("popular this week", _positive),
    "item_shown_7d": ("popular this week", _positive),
    "item_click_share_7d": ("popular this week", _positive),
    "item_ctr_7d": ("often clicked this week", _positive),
    "item_ctr_all": ("often clicked when shown", _positive),
    "item_clicks_all": ("a long-time favourite", _positive),
    "item_days_since_click": ("recently clicked by others", _within(2.0)),
    "item_age_days": ("new in the shop", _within(14.0)),
    "user_category_clicks": ("you often choose {category}", _positive),
    "user_category_share": ("you often choose {category}", _positive),
    "user_category_ctr": ("you often choose {category}", _positive),
    "user_item_clicks": ("you clicked this before", _positive),
    "user_item_shown": ("you have seen this before", _positive),
    "blurb_words": ("well described", _positive),
}
MIN_SHARE = 0.2  # a phrase must carry this share of the item's positive push to be named


def reasons(features: list[str], values: np.ndarray, contributions: np.ndarray, categories: list[str | None],
            most: int = 2) -> list[str | None]:
    """One reason per row of `contributions` (n, len(features) + 1; last column = bias), or None
    when no item-level feature pushed the score up. `values`: the feature matrix (NaN = missing)."""
    out: list[str | None] = []
    for vals, row, category in zip(values, contributions, categories):
        by_phrase: dict[str, float] = {}
        for name, value, push in zip(features, vals, row[:-1]):
            phrase, holds = PHRASES.get(name, (None, _positive))
            if phrase and push > 0 and not np.isnan(value) and holds(float(value)):
                by_phrase[phrase] = by_phrase.get(phrase, 0.0) + float(push)
        total = sum(by_phrase.values())
        ranked = sorted(by_phrase.items(), key=lambda kv: -kv[1])
        chosen = [p for p, v in ranked[:most] if total > 0 and v >= MIN_SHARE * total]
        text = "; ".join(p.format(category=category or "this category") for p in chosen)
        out.append(text[:1].upper() + text[1:] if text else None)
    return out


def top_features(features: list[str], values: np.ndarray, contributions: np.ndarray,
                 k: int = 3) -> list[list[tuple[str, float | None, float]]]:
    """Per row: the k features with the largest |contribution|, as (name, value or None when
    missing, contribution)."""
    out = []
    for vals, row in zip(values, contributions):
        order = np.argsort(-np.abs(row[:-1]), kind="stable")[:k]
        out.append([(features[j], None if np.isnan(vals[j]) else float(vals[j]), float(row[j])) for j in order])
    return out
