"""Point-in-time user histories: the items a user clicked strictly before a moment."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import polars as pl


def click_histories(log: pl.DataFrame, moments: pl.DataFrame, length: int) -> pl.DataFrame:
    """For each distinct (user_id, ts) in `moments`: `history`, the user's last `length` clicked
    item ids with ts strictly before that moment, most recent last (empty list when none)."""
    keys = moments.select("user_id", "ts").unique()
    clicks = log.filter(pl.col("clicked") == 1).select("user_id", "item_id", "ts").sort("user_id", "ts", "item_id")
    clicks = clicks.with_columns(n_before=pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.Int64))
    # how many of the user's clicks happened strictly before the moment
    counted = keys.sort("ts").join_asof(
        clicks.select("user_id", "ts", "n_before").sort("ts"), on="ts", by="user_id",
        strategy="backward", allow_exact_matches=False, check_sortedness=False,
    ).with_columns(pl.col("n_before").fill_null(0))
    lists = clicks.group_by("user_id").agg(items=pl.col("item_id"))
    out = counted.join(lists, on="user_id", how="left").with_columns(pl.col("items").fill_null([]))
    start = pl.max_horizontal(pl.col("n_before") - length, pl.lit(0))
    return out.select(
        "user_id", "ts",
        history=pl.col("items").list.slice(start, pl.col("n_before") - start),
    )


def rows_by_history(histories: Sequence[list[str]], key: Callable[[list[str]], Hashable] = tuple) -> dict[Hashable, list[int]]:
    """Row numbers grouped by `key(history)`, in order of first appearance. The key is made once
    per distinct list object: a request's rows share their user's history list (the live state
    hands out one per user until their next click), so 100 candidates cost one key, not 100."""
    out: dict[Hashable, list[int]] = {}
    # id(list) -> (the list, its key's rows): holding the list keeps its id from being reused by
    # another (a polars Series, say, hands out a fresh list per row)
    seen: dict[int, tuple[list[str], list[int]]] = {}
    for row, history in enumerate(histories):
        known = seen.get(id(history))
        if known is None:
            known = seen[id(history)] = (history, out.setdefault(key(history), []))
        known[1].append(row)
    return out
