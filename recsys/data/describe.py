"""A dataset at a glance: what `recsys data describe` prints."""

from __future__ import annotations

from typing import Any

import polars as pl

from recsys.core.dataset import Dataset, content_hash


def describe(data: Dataset) -> dict[str, Any]:
    ev, items = data.events, data.items
    per_user = ev.group_by("user_id").len()["len"]
    per_request = ev.group_by("request_id").len()["len"]
    first_seen = ev.group_by("item_id").agg(first=pl.col("ts").min())
    ts_min, ts_max = ev["ts"].min(), ev["ts"].max()
    span = (ts_max - ts_min) if ev.height else None  # type: ignore[operator]
    late = first_seen.filter(pl.col("first") > ts_min + span * 0.8).height if span is not None else 0  # type: ignore[operator]
    text_len = (items["title"].str.len_chars() + items["text"].str.len_chars())
    summary: dict[str, Any] = {
        "source": data.manifest["source"].get("kind", "?"),
        "content hash": content_hash(data.manifest),
        "items": items.height,
        "items never shown": items.height - first_seen.height,
        "items first shown in the last 20% of time": late,
        "categories": items["category"].n_unique(),
        "median item text chars": int(text_len.median() or 0),
        "events (impressions)": ev.height,
        "clicks": int(ev["clicked"].cast(pl.Int64).sum()),
        "click rate": float(ev["clicked"].mean() or 0.0),
        "users": ev["user_id"].n_unique(),
        "requests": ev["request_id"].n_unique(),
        "requests with a click": ev.group_by("request_id").agg(pl.col("clicked").max()).filter(pl.col("clicked") == 1).height,
        "median impressions per user": float(per_user.median() or 0),
        "median impressions per request": float(per_request.median() or 0),
        "first event": str(ts_min),
        "last event": str(ts_max),
        "rows rejected at import": sum(data.manifest.get("rejects_by_reason", {}).values()),
    }
    if data.history is not None:
        summary["history rows (pre-period clicks)"] = data.history.height
    if data.ground_truth is not None:
        summary["ground truth rows"] = data.ground_truth.height
    return summary
