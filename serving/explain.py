"""Human-readable reasons from the ranker's per-feature contributions (LightGBM pred_contrib).

Each feature maps to a phrase; contributions of features sharing a phrase add up; an item's
reason is the phrase(s) that pushed its score up the most. Features that describe the user
rather than the item (activity, CTR) say nothing about why *this* item, so they have no phrase,
and neither has a feature this module does not know: it says nothing.

A phrase is said only when the row's values make it true, not merely when its feature pushed
the score up: smoothed rates (CTRs, category shares) are positive for an item nobody clicked and
a user nobody has seen, so each phrase checks the raw counts behind it ("often clicked this
week" needs clicks this week, "you often pick mugs" needs a user with clicks on mugs and an item
with a category). Those counts come from the ranker's own features or from `evidence`: other
columns of the same feature rows (the groups compute more columns than a ranker may use).
Personal phrases are never said of a user the log does not know, nor item phrases that need
the item's text of an item the catalog does not have. A missing value (None, NaN) supports
nothing.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_SHARE = 0.2  # a phrase must carry this share of the item's positive push to be named
OFTEN_CLICKS = 2  # "popular", "often", "trending": at least this many clicks in the window
OFTEN_CATEGORY_SHARE = 0.2  # "you often pick X": at least this share of the user's clicks (when known)
NEW_DAYS = 14.0  # "new in the shop"
LONG_TIME_DAYS = 30.0  # "a long-time favourite"
RECENT_DAYS = 2.0  # "recently clicked"
UNKNOWN_CATEGORIES = {"", "?", "none", "null", "nan", "unknown", "(no genres listed)"}


@dataclass(frozen=True)
class Row:
    """What is known of one (user, item) row: its numbers by feature name (ranker features and
    evidence columns; None when missing), its category and whether user and item are known
    (None: not told, so only the numbers decide)."""

    numbers: Mapping[str, float | None]
    category: str | None = None
    known_user: bool | None = None
    known_item: bool | None = None

    def get(self, name: str) -> float | None:
        return self.numbers.get(name)

    def at_least(self, name: str, least: float) -> bool:
        v = self.get(name)
        return v is not None and v >= least

    def at_most(self, name: str, most: float) -> bool:
        v = self.get(name)
        return v is not None and v <= most


Holds = Callable[[float, Row], bool]


def _user(holds: Holds) -> Holds:
    """A personal phrase: never of a user the log does not know."""
    return lambda v, row: row.known_user is not False and holds(v, row)


def _in_catalog(holds: Holds) -> Holds:
    """A phrase about the item itself (its age, its text): never of an id the catalog does not
    have, whose values are defaults (an unknown item is "0 days old"), not facts."""
    return lambda v, row: row.known_item is not False and holds(v, row)


def _count(least: float) -> Holds:
    return lambda v, row: v >= least


def _backed_by(name: str, least: float) -> Holds:
    """A smoothed value (CTR, share) is said only when the count behind it is there."""
    return lambda v, row: row.at_least(name, least)


def _clicked_history(v: float, row: Row) -> bool:
    """The interest score is built from the user's recent clicks: there must be some."""
    history = row.get("interest_history_len")
    if history is not None:
        return history >= 1
    return row.at_least("user_clicks_all", 1)


def _often_in_category(v: float, row: Row) -> bool:
    if category_phrase(row.category) is None or not row.at_least("user_category_clicks", OFTEN_CLICKS):
        return False
    clicks, total = row.get("user_category_clicks"), row.get("user_clicks_all")
    return total is None or total <= 0 or clicks / total >= OFTEN_CATEGORY_SHARE  # type: ignore[operator]


def _never_shown_and_young(v: float, row: Row) -> bool:
    """`item_is_new` (never shown before): new in the shop unless its age says otherwise."""
    age = row.get("item_age_days")
    return v >= 0.5 and (age is None or age <= NEW_DAYS)


def _long_time_favourite(v: float, row: Row) -> bool:
    return v >= OFTEN_CLICKS and row.at_least("item_age_days", LONG_TIME_DAYS)


# feature -> (phrase, when the phrase is true of the row): a contribution can be positive for an
# old item too, and "new in the shop" must not be said of it
PHRASES: dict[str, tuple[str, Holds]] = {
    "interest_score": ("similar to items you clicked", _in_catalog(_user(_clicked_history))),
    "blurb_interest": ("its description matches your interests", _in_catalog(_user(_clicked_history))),
    "item_clicks_1d": ("trending today", _count(OFTEN_CLICKS)),
    "item_clicks_7d": ("popular this week", _count(OFTEN_CLICKS)),
    "item_shown_7d": ("popular this week", _backed_by("item_clicks_7d", OFTEN_CLICKS)),
    "item_click_share_7d": ("popular this week", _backed_by("item_clicks_7d", OFTEN_CLICKS)),
    "item_ctr_7d": ("often clicked this week", _backed_by("item_clicks_7d", OFTEN_CLICKS)),
    "item_ctr_all": ("often clicked when shown", _backed_by("item_clicks_all", OFTEN_CLICKS)),
    "item_clicks_all": ("a long-time favourite", _long_time_favourite),
    "item_days_since_click": ("recently clicked", lambda v, row: 0 <= v <= RECENT_DAYS),
    "item_age_days": ("new in the shop", _in_catalog(lambda v, row: 0 <= v <= NEW_DAYS)),
    "item_is_new": ("new in the shop", _in_catalog(_never_shown_and_young)),
    "user_category_clicks": ("you often pick {category}", _user(_often_in_category)),
    "user_category_share": ("you often pick {category}", _user(_often_in_category)),
    "user_category_ctr": ("you often pick {category}", _user(_often_in_category)),
    "user_item_clicks": ("you clicked this before", _user(_count(1))),
    "user_item_shown": ("you have seen this before", _user(_count(1))),
    "blurb_words": ("well described", _in_catalog(_count(1))),
    "interest_max": ("similar to items you clicked", _in_catalog(_user(_clicked_history))),
    "interest_gap": ("similar to items you clicked", _in_catalog(_user(_clicked_history))),
    "rank_interest": ("similar to items you clicked", _in_catalog(_user(_clicked_history))),
    "rank_interest_max": ("similar to items you clicked", _in_catalog(_user(_clicked_history))),
    "item_clicks_recent": ("popular lately", _count(OFTEN_CLICKS)),
    "item_click_share_recent": ("popular lately", _backed_by("item_clicks_recent", OFTEN_CLICKS)),
    "rank_recent": ("popular lately", _backed_by("item_clicks_recent", OFTEN_CLICKS)),
    "item_clicks_recent_short": ("trending", _count(OFTEN_CLICKS)),
    "item_trend": ("trending", lambda v, row: v > 1.0 and row.at_least("item_clicks_recent", OFTEN_CLICKS)),
    "cf_score": ("people who clicked what you clicked chose it too", _user(lambda v, row: v > 0)),
    "rank_cf": ("people who clicked what you clicked chose it too", _user(_backed_by("cf_score", 1e-9))),
    "user_topic_clicks": ("you often read about this", _user(_backed_by("user_topic_clicks", OFTEN_CLICKS))),
    "user_topic_share": ("you often read about this", _user(_backed_by("user_topic_clicks", OFTEN_CLICKS))),
    "user_topic_ctr": ("you often read about this", _user(_backed_by("user_topic_clicks", OFTEN_CLICKS))),
    "rank_topic": ("you often read about this", _user(_backed_by("user_topic_clicks", OFTEN_CLICKS))),
}
# columns the checks read besides the phrase's own feature: pass them as `evidence`
EVIDENCE = ("interest_history_len", "user_clicks_all", "user_category_clicks", "item_clicks_7d", "item_clicks_all",
            "item_age_days", "item_clicks_recent", "user_topic_clicks", "cf_score")

# last words that have no plural in a shop's voice ("You often pick music", not "musics")
UNCOUNTABLE = {
    "apparel", "art", "baby", "beauty", "bedding", "clothing", "decor", "equipment", "entertainment", "finance",
    "fitness", "food", "footwear", "furniture", "gear", "health", "home", "jewellery", "jewelry", "knitwear",
    "lifestyle", "luggage", "music", "outdoor", "software", "hardware", "stationery", "travel", "weather", "wear",
}
IRREGULAR = {"knife": "knives", "shelf": "shelves", "leaf": "leaves", "loaf": "loaves", "wife": "wives", "child": "children",
             "person": "people", "man": "men", "woman": "women", "mouse": "mice", "foot": "feet", "tooth": "teeth",
             "goose": "geese", "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes", "echo": "echoes"}
_NOUN = re.compile(r"^(?:[a-z]-)?[a-z]+(?:[ -][a-z]+){0,2}$")  # "mug", "t-shirt", "water bottle"; lower case only


def _plural(word: str) -> str:
    if word in IRREGULAR:
        return IRREGULAR[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def category_phrase(category: str | None) -> str | None:
    """`_category_phrase`, remembered per category (a catalog has few; a request asks for each often)."""
    try:
        return _remembered_phrase(category)
    except TypeError:  # not hashable: said afresh
        return _category_phrase(category)


def _category_phrase(category: str | None) -> str | None:
    """How a reason names a category: a plain plural ("T-shirts", "water bottles", "mugs"), or
    "items like this" when the name is not a simple lower-case noun (a code, a genre in title
    case, "Home & Kitchen", a mass noun); None when there is no category to speak of."""
    if category is None or (isinstance(category, float) and math.isnan(category)):
        return None
    name = " ".join(str(category).split())
    if name.lower() in UNKNOWN_CATEGORIES:
        return None
    if not _NOUN.match(name):
        return "items like this"
    head, _, last = name.rpartition(" ")
    if "-" in last and len(last.split("-")[0]) == 1:  # t-shirt -> T-shirt, x-ray -> X-ray
        last = last[0].upper() + last[1:]
    stem = last.lower().rsplit("-", 1)[-1]
    if stem in UNCOUNTABLE or len(stem) < 3:
        return "items like this"
    if not stem.endswith("s") or stem.endswith("ss"):  # "headphones", "electronics": already plural; "glass" is not
        last = last[: len(last) - len(stem)] + _plural(stem)
    return f"{head} {last}".strip()


_remembered_phrase = functools.lru_cache(maxsize=4096)(_category_phrase)


def _number(v: object) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def reasons(features: Sequence[str], values: np.ndarray, contributions: np.ndarray, categories: Sequence[str | None],
            most: int = 2, *, evidence: Mapping[str, Sequence[object]] | None = None,
            known_users: Sequence[bool] | None = None, known_items: Sequence[bool] | None = None) -> list[str | None]:
    """One reason per row of `contributions` (n, len(features) + 1; last column = bias), or None
    when no phrase that is true of the row pushed the score up. `values`: the feature matrix
    (NaN or None = missing); `evidence`: more columns of the same rows by name (see EVIDENCE);
    `known_users` / `known_items`: per row, whether the log knows the user and the catalog the item."""
    out: list[str | None] = []
    features = list(features)
    phrased = [(j, name, *PHRASES[name]) for j, name in enumerate(features) if name in PHRASES]  # the rest say nothing
    pushes = np.asarray(contributions, dtype=np.float64)[:, :len(features)].tolist()
    rows = [_numbers(row) for row in np.asarray(values)]
    columns = {name: _numbers(column) for name, column in (evidence or {}).items()}
    for n, (vals, row) in enumerate(zip(rows, pushes)):
        numbers: dict[str, float | None] = {name: column[n] for name, column in columns.items()}
        numbers.update(zip(features, vals))
        facts = Row(numbers, categories[n] if n < len(categories) else None,
                    None if known_users is None else bool(known_users[n]),
                    None if known_items is None else bool(known_items[n]))
        by_phrase: dict[str, float] = {}
        for j, name, phrase, holds in phrased:
            push, value = row[j], numbers.get(name)
            if push > 0 and value is not None and holds(value, facts):  # NaN > 0 is False
                by_phrase[phrase] = by_phrase.get(phrase, 0.0) + push
        total = sum(by_phrase.values())
        ranked = sorted(by_phrase.items(), key=lambda kv: -kv[1])
        chosen = [p for p, v in ranked[:most] if total > 0 and v >= MIN_SHARE * total]
        named = category_phrase(facts.category) or "items like this"
        text = "; ".join(p.format(category=named) for p in chosen)
        out.append(text[:1].upper() + text[1:] if text else None)
    return out


def _numbers(column: Sequence[object]) -> list[float | None]:
    """`_number` of each value; a float array in one conversion (the per-value path cost ~1 ms a request)."""
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiub":
        return [None if v != v else v for v in column.astype(np.float64).tolist()]  # v != v: NaN
    return [_number(v) for v in column]


def top_features(features: list[str], values: np.ndarray, contributions: np.ndarray,
                 k: int = 3) -> list[list[tuple[str, float | None, float]]]:
    """Per row: the k features with the largest |contribution|, as (name, value or None when
    missing, contribution)."""
    out = []
    for vals, row in zip(values, contributions):
        order = np.argsort(-np.abs(row[:-1]), kind="stable")[:k]
        out.append([(features[j], _number(vals[j]), float(row[j])) for j in order])
    return out
