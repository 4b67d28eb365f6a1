"""Point-in-time user histories and the training/validation lists, in polars.

A request's history is the user's clicked items strictly before the request's first impression,
most recent last, at most `history_len` of them, taken from the `context` events only.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def request_histories(requests: pl.DataFrame, context: pl.DataFrame, history_len: int,
                      fill_from_later: bool = False) -> pl.DataFrame:
    """requests (request_id, user_id, ts) -> + `history` (list of item ids, oldest first).
    fill_from_later (training only): a history shorter than history_len is topped up with the
    user's earliest clicks after the request's last impression, so a user's first clicks train too."""
    clicks = (
        context.filter(pl.col("clicked") == 1)
        .select("user_id", "item_id", "ts")
        .sort("user_id", "ts", "item_id")
        .with_columns(k=pl.int_range(pl.len()).over("user_id"))
    )
    lists = clicks.group_by("user_id").agg(items=pl.col("item_id").sort_by("k"))
    # index of the user's last click strictly before the request
    last = (
        requests.sort("ts")
        .join_asof(clicks.select("user_id", "ts", "k").sort("ts"), on="ts", by="user_id",
                   strategy="backward", allow_exact_matches=False, check_sortedness=False)
    )
    n = (pl.col("k") + 1).fill_null(0)
    start = (n - history_len).clip(lower_bound=0)
    out = last.join(lists, on="user_id", how="left").with_columns(
        history=pl.col("items").fill_null([]).list.slice(start, n - start))
    if fill_from_later:
        # after the request's last impression: a session's own later clicks (the sample's positive
        # among them) must not leak into its history
        ends = context.group_by("request_id").agg(end=pl.col("ts").max())
        following = (
            out.join(ends, on="request_id", how="left")
            .with_columns(end=pl.coalesce("end", "ts")).sort("end")
            .join_asof(clicks.select("user_id", end="ts", later="k").sort("end"), on="end", by="user_id",
                       strategy="forward", allow_exact_matches=False, check_sortedness=False)
            .drop("end")
        )
        wanted = history_len - pl.col("history").list.len()
        out = following.with_columns(history=pl.when(pl.col("later").is_not_null() & (wanted > 0)).then(
            pl.concat_list("history", pl.col("items").list.slice(pl.col("later").fill_null(0), wanted.clip(lower_bound=0)))
        ).otherwise(pl.col("history"))).drop("later")
    return out.drop("k", "items").sort("request_id")


def requests_of(events: pl.DataFrame) -> pl.DataFrame:
    return events.group_by("request_id").agg(pl.col("user_id").first(), pl.col("ts").min())


def train_lists(train: pl.DataFrame, history_len: int, negatives: int, seed: int,
                max_samples: int | None, fill_from_later: bool = False) -> pl.DataFrame:
    """One row per click with a non-empty history and at least one non-click in its request:
    history, candidates = [clicked, K non-clicked of the same request] (negatives drawn with
    replacement when the request shows fewer than K), labels = [1, 0, ..., 0]."""
    hist = request_histories(requests_of(train), train, history_len, fill_from_later)
    hist = hist.filter(pl.col("history").list.len() > 0)
    per_req = train.group_by("request_id").agg(
        pos=pl.col("item_id").filter(pl.col("clicked") == 1),
        neg=pl.col("item_id").filter(pl.col("clicked") == 0),
    ).filter(pl.col("neg").list.len() > 0)
    rows = hist.join(per_req, on="request_id").explode("pos").drop_nulls("pos").sort("request_id", "pos")
    rng = np.random.default_rng(seed)
    if max_samples is not None and rows.height > max_samples:
        rows = rows[np.sort(rng.choice(rows.height, max_samples, replace=False))]
    negs = []
    for neg in rows["neg"].to_list():
        replace = len(neg) < negatives
        negs.append(list(rng.choice(neg, negatives, replace=replace)))
    cands = [[p, *n] for p, n in zip(rows["pos"].to_list(), negs)]
    order = rng.permutation(rows.height)  # training order: shuffled once, fixed for resume
    out = rows.select("request_id", "user_id", "history").with_columns(
        candidates=pl.Series(cands, dtype=pl.List(pl.String)),
    )
    return out[order] if out.height else out


def to_index(lists: pl.DataFrame, item_index: dict[str, int], history_len: int) -> dict[str, np.ndarray]:
    """Item ids -> row numbers of the item table; histories left-padded with -1 to history_len."""
    hist = np.full((lists.height, history_len), -1, dtype=np.int64)
    for r, h in enumerate(lists["history"].to_list()):
        ids = [item_index[i] for i in h if i in item_index][-history_len:]
        if ids:
            hist[r, -len(ids):] = ids
    cand = np.array([[item_index[i] for i in c] for c in lists["candidates"].to_list()], dtype=np.int64)
    return {"hist": hist, "cand": cand.reshape(lists.height, -1)}


def valid_frame(valid: pl.DataFrame, context: pl.DataFrame, history_len: int, max_requests: int | None,
                seed: int) -> pl.DataFrame:
    """Valid impressions of requests with a click and a non-click, each with its history
    (from context + valid clicks strictly before it): request_id, item_id, label, history."""
    stats = valid.group_by("request_id").agg(c=pl.col("clicked").sum(), n=pl.len())
    keep = stats.filter((pl.col("c") > 0) & (pl.col("c") < pl.col("n")))["request_id"].sort()
    if max_requests is not None and keep.len() > max_requests:
        keep = keep.sample(max_requests, seed=seed).sort()
    valid = valid.filter(pl.col("request_id").is_in(keep.implode()))
    hist = request_histories(requests_of(valid), pl.concat([context, valid], how="vertical_relaxed"), history_len)
    return valid.select("request_id", "item_id", label=pl.col("clicked")).join(
        hist.select("request_id", "history"), on="request_id"
    ).sort("request_id", "item_id")
