"""The part every importer shares: validate, apply the unknown-item policy, write the dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import polars as pl

from recsys.core.dataset import write_dataset
from recsys.core.tables import blank
from recsys.core.validate import (
    DEFAULT_SESSION_GAP_MINUTES,
    _damage_columns,
    _first_failure,
    accepted_events,
    accepted_items,
    check_events,
    damaged,
    placeholder_items,
    rejects,
)

log = logging.getLogger(__name__)

UnknownItems = Literal["reject", "placeholder"]


def check_history(raw: pl.LazyFrame, known_item_ids: pl.LazyFrame) -> pl.LazyFrame:
    known = known_item_ids.select("item_id").unique().with_columns(_known=pl.lit(True))
    lf = raw.join(known, on="item_id", how="left")
    reason, field = _first_failure(
        [
            *damaged(lf.collect_schema().names()),
            (blank(pl.col("user_id")), "missing_user_id", "user_id"),
            (blank(pl.col("item_id")), "missing_item_id", "history"),
            (pl.col("_known").is_null(), "unknown_item", "history"),
        ]
    )
    return lf.with_columns(reason, field).drop("_known", *_damage_columns(lf))


def finish_import(
    out: Path,
    *,
    items_checked: pl.DataFrame,
    events_raw: pl.LazyFrame,
    source: dict[str, Any],
    unknown_items: UnknownItems = "reject",
    ts_field: str = "timestamp",
    clicked_field: str = "clicked",
    history_raw: pl.LazyFrame | None = None,
    session_gap_minutes: int = DEFAULT_SESSION_GAP_MINUTES,
) -> dict[str, Any]:
    """Validate events (and history) against the accepted items and write the dataset."""
    items = accepted_items(items_checked)
    checked = check_events(events_raw, items.lazy(), ts_field, clicked_field)
    history_checked = check_history(history_raw, items.lazy()) if history_raw is not None else None
    n_placeholders = 0
    if unknown_items == "placeholder":
        extra_items = placeholder_items(checked, *([history_checked] if history_checked is not None else []))
        n_placeholders = extra_items.height
        if n_placeholders:
            log.info("adding %d placeholder items for ids only events/history mention", n_placeholders)
            items = pl.concat([items, extra_items.select(items.columns)])
            checked = check_events(events_raw, items.lazy(), ts_field, clicked_field)
            if history_raw is not None:
                history_checked = check_history(history_raw, items.lazy())
    reject_frames = [rejects(items_checked, "items"), rejects(checked, "events")]
    rows_in = {
        "items": items_checked.height,
        "events": events_raw.select(pl.len()).collect().item(),
    }
    history = None
    if history_raw is not None and history_checked is not None:
        reject_frames.append(rejects(history_checked, "history"))
        rows_in["history"] = history_raw.select(pl.len()).collect().item()
        history = history_checked.filter(pl.col("reason").is_null())
    return write_dataset(
        out,
        items=items,
        events=accepted_events(checked, session_gap_minutes),
        rejects=reject_frames,
        rows_in=rows_in,
        source={**source, "unknown_items": unknown_items, "session_gap_minutes": session_gap_minutes},
        history=history,
        extra={"placeholder_items": n_placeholders},
    )
