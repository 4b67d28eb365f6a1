"""The contract format (docs/CONTRACT.md): EVENTS.csv + ITEMS.csv (or parquet).

EVENTS: user_id,item_id,timestamp,clicked [,request_id,position,rating]
ITEMS:  item_id,title,text [,category,attributes,created_at]
Without request_id, a user's rows form one request until a gap over the session window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from recsys.core.tables import DAMAGE, DAMAGE_FIELD, parse_iso_utc, scan_table
from recsys.core.validate import DEFAULT_MAX_TEXT_CHARS, DEFAULT_SESSION_GAP_MINUTES, check_items
from recsys.data.importers.common import UnknownItems, finish_import

EVENT_COLUMNS = ["user_id", "item_id", "timestamp", "clicked"]
EVENT_OPTIONAL = ["request_id", "position", "rating"]
ITEM_COLUMNS = ["item_id", "title", "text"]
ITEM_OPTIONAL = ["category", "attributes", "created_at"]


def _scan(path: Path, label: str, required: list[str], optional: list[str]) -> tuple[pl.LazyFrame, list[str]]:
    """The file with `raw` (the source row as JSON) and every optional column (null when absent)."""
    lf, ignored = scan_table(path, label, required, optional, with_raw=True)
    names = lf.collect_schema().names()
    return lf.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in optional if c not in names), ignored


def read_items(path: Path, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> tuple[pl.DataFrame, list[str]]:
    lf, ignored = _scan(path, "ITEMS", ITEM_COLUMNS, ITEM_OPTIONAL)
    lf = lf.with_columns(created_at=parse_iso_utc(pl.col("created_at")))
    return check_items(lf.collect(), max_text_chars), ignored


def read_events(path: Path) -> tuple[pl.LazyFrame, list[str]]:
    lf, ignored = _scan(path, "EVENTS", EVENT_COLUMNS, EVENT_OPTIONAL)
    clicked = pl.col("clicked").str.strip_chars()
    lf = lf.select(
        "line",
        "raw",
        DAMAGE,
        DAMAGE_FIELD,
        "request_id",
        "user_id",
        "item_id",
        ts=parse_iso_utc(pl.col("timestamp")),
        position=pl.col("position").cast(pl.Int32, strict=False),
        clicked=pl.when(clicked.is_in(["0", "1"])).then(clicked.cast(pl.Int8)).otherwise(None),
        rating=pl.col("rating").cast(pl.Float32, strict=False),
    )
    return lf, ignored


def import_events(
    events_path: Path,
    items_path: Path,
    out: Path,
    *,
    unknown_items: UnknownItems = "reject",
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    session_gap_minutes: int = DEFAULT_SESSION_GAP_MINUTES,
) -> dict[str, Any]:
    items_checked, ignored_items = read_items(items_path, max_text_chars)
    events_raw, ignored_events = read_events(events_path)
    source = {
        "kind": "events",
        "events": str(events_path),
        "items": str(items_path),
        "ignored_columns": {"items": ignored_items, "events": ignored_events},
        "max_text_chars": max_text_chars,
    }
    return finish_import(
        out,
        items_checked=items_checked,
        events_raw=events_raw,
        source=source,
        unknown_items=unknown_items,
        session_gap_minutes=session_gap_minutes,
    )
