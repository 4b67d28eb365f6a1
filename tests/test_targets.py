"""Ranking groups: what each shape holds, and that none of them sees the future."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from recsys.core.schemas import EVENTS_SCHEMA, ITEMS_SCHEMA
from recsys.core.targets import catalog_items, catalog_targets, page_targets, user_cut_targets

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _log(rows: list[tuple[str, str, float, int]]) -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": [f"r{k}" for k in range(len(rows))], "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
        "ts": [T0 + timedelta(days=r[2]) for r in rows], "position": [None] * len(rows), "clicked": [r[3] for r in rows],
        "rating": [None] * len(rows),
    }, schema=EVENTS_SCHEMA)


ITEMS = pl.DataFrame({"item_id": ["a", "b", "c", "late", "never"], "title": list("abcln"), "text": list("abcln"),
                      "category": [None] * 5, "attributes": [None] * 5, "created_at": [None] * 5}, schema=ITEMS_SCHEMA)
LOG = _log([("u", "a", 0, 1), ("u", "b", 1, 0), ("v", "a", 1, 1), ("u", "c", 5, 1), ("v", "late", 6, 1), ("u", "a", 7, 0),
            ("v", "b", 8, 1)])


def test_an_item_exists_once_created_or_shown_never_because_it_is_in_the_catalog() -> None:
    assert set(catalog_items(ITEMS, T0 + timedelta(days=5.5), LOG)["item_id"]) == {"a", "b", "c"}
    assert "never" in set(catalog_items(ITEMS, T0 + timedelta(days=5.5))["item_id"])  # no log: undated = always


def test_catalog_groups_rank_unseen_existing_items_and_label_the_horizon() -> None:
    groups = catalog_targets(LOG, ITEMS, T0 + timedelta(days=4), T0 + timedelta(days=6.5), tag="c", max_users=10,
                             max_items=None, seed=0)
    assert groups["shape"].unique().to_list() == ["catalog"]
    u = groups.filter(pl.col("user_id") == "u")
    # a, b seen before; "late" is first shown inside the horizon, "never" does not exist yet
    assert dict(zip(u["item_id"], u["label"])) == {"c": 1, "late": 0}
    v = groups.filter(pl.col("user_id") == "v")
    assert dict(zip(v["item_id"], v["label"])) == {"b": 0, "c": 0, "late": 1}  # "late" first shown in the horizon


def test_page_groups_rank_what_the_user_was_shown_next_as_of_the_cutoff() -> None:
    groups = page_targets(LOG, T0 + timedelta(days=4), T0 + timedelta(days=9), tag="p", max_users=10, seed=0)
    u = groups.filter(pl.col("user_id") == "u")
    assert dict(zip(u["item_id"], u["label"])) == {"a": 0, "c": 1} and (u["ts"] == T0 + timedelta(days=4)).all()
    assert groups.filter(pl.col("user_id") == "v")["item_id"].sort().to_list() == ["b", "late"]


def test_user_cuts_rank_each_user_at_a_moment_of_their_own() -> None:
    rows = [(user, item, day + offset, int(item in liked))
            for user, offset, liked in (("u", 0.0, {"a", "d"}), ("w", 20.0, {"b", "d"}))
            for day, item in enumerate(["a", "b", "c", "a", "b", "c", "d"])]
    log = _log(rows)
    items = pl.DataFrame({"item_id": list("abcd"), "title": list("abcd"), "text": list("abcd"), "category": [None] * 4,
                          "attributes": [None] * 4, "created_at": [None] * 4}, schema=ITEMS_SCHEMA)
    groups = user_cut_targets(log, items, T0 + timedelta(days=40), timedelta(days=30), tag="u", max_users=10, max_items=None,
                              seed=0, min_user_events=5)
    moments = groups.group_by("user_id").agg(pl.col("ts").first()).sort("user_id")
    # w is active 20 days after u: one global cutoff would see only one of them
    assert moments["user_id"].to_list() == ["u", "w"]
    gap = moments["ts"][1] - moments["ts"][0]
    assert timedelta(days=15) < gap < timedelta(days=25)
    for user, ts in moments.iter_rows():
        before = set(log.filter((pl.col("user_id") == user) & (pl.col("ts") < ts))["item_id"])
        mine = groups.filter(pl.col("user_id") == user)
        assert not before & set(mine["item_id"])  # only items the user had not seen
        clicked_after = set(log.filter((pl.col("user_id") == user) & (pl.col("ts") >= ts) & (pl.col("clicked") == 1))["item_id"])
        assert set(mine.filter(pl.col("label") == 1)["item_id"]) == clicked_after - before
