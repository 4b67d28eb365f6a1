"""The data contract: polars schemas of every table that passes between stages.

One file, so a reader sees every column the engine relies on. A dataset directory holds
`items.parquet`, `events.parquet`, `rejects.parquet`, optionally `history.parquet` and
`ground_truth.parquet` (synthetic data only), and `manifest.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

SCHEMA_VERSION = 1


def table(columns: Mapping[str, PolarsDataType]) -> pl.Schema:
    """A declared table: its columns in order (a typed door to pl.Schema, which takes a loose union)."""
    return pl.Schema(columns)


UTC_TS = pl.Datetime("us", "UTC")

# An item of the catalog. `attributes` is a JSON object of string values (colour, brand, ...)
# so any source fits without a schema change; `created_at` is null when the source has no date.
ITEMS_SCHEMA = table(
    {
        "item_id": pl.String,
        "title": pl.String,
        "text": pl.String,
        "category": pl.String,
        "attributes": pl.String,
        "created_at": UTC_TS,
    }
)

# One row per item shown to a user (an impression); `clicked` is the label.
# `position` is the 1-based slot in the shown list, null when the source does not record it.
# `rating` carries an explicit rating where the source has one (MovieLens), else null.
EVENTS_SCHEMA = table(
    {
        "request_id": pl.String,
        "user_id": pl.String,
        "item_id": pl.String,
        "ts": UTC_TS,
        "position": pl.Int32,
        "clicked": pl.Int8,
        "rating": pl.Float32,
    }
)

# What a user clicked before the logged period (MIND's history column); order 0 = oldest.
HISTORY_SCHEMA = table(
    {
        "user_id": pl.String,
        "item_id": pl.String,
        "order": pl.Int32,
    }
)

# A row an importer refused. `line` is the record's line in its source file counting the header
# as line 1 (records whose quoted fields span lines shift it; it is then the record number + 1).
# `raw` is the source row as JSON, so nothing is lost.
REJECTS_SCHEMA = table(
    {
        "source": pl.String,
        "line": pl.Int64,
        "reason": pl.String,
        "field": pl.String,
        "raw": pl.String,
    }
)

# The synthetic shop's known click model, so an oracle ranking can be scored.
# `relevance` is the click probability without position bias; `click_prob` includes it.
GROUND_TRUTH_SCHEMA = table(
    {
        "request_id": pl.String,
        "item_id": pl.String,
        "relevance": pl.Float64,
        "click_prob": pl.Float64,
    }
)

# Pairs to score (CONTRACT.md) and what scoring returns.
CANDIDATES_SCHEMA = table({"user_id": pl.String, "item_id": pl.String})
SCORES_SCHEMA = table({"user_id": pl.String, "item_id": pl.String, "score": pl.Float64})

TABLES: dict[str, pl.Schema] = {
    "items": ITEMS_SCHEMA,
    "events": EVENTS_SCHEMA,
    "history": HISTORY_SCHEMA,
    "rejects": REJECTS_SCHEMA,
    "ground_truth": GROUND_TRUTH_SCHEMA,
}
REQUIRED_TABLES = ("items", "events", "rejects")


def conform(frame: pl.DataFrame | pl.LazyFrame, schema: pl.Schema) -> pl.DataFrame | pl.LazyFrame:
    """Select exactly the schema's columns, in order, cast to its dtypes (missing ones as null)."""
    present = set(frame.collect_schema().names())
    return frame.select(
        [
            (pl.col(name) if name in present else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )


def check_schema(frame: pl.DataFrame, schema: pl.Schema, table: str) -> list[str]:
    """Return human-readable problems where `frame` does not match `schema` (empty = fine)."""
    problems: list[str] = []
    actual = frame.schema
    for name, dtype in schema.items():
        if name not in actual:
            problems.append(f"{table}: missing column '{name}' (expected {dtype})")
        elif actual[name] != dtype:
            problems.append(f"{table}: column '{name}' is {actual[name]}, expected {dtype}")
    extra = [n for n in actual.names() if n not in schema]
    if extra:
        problems.append(f"{table}: unexpected columns {extra}")
    return problems
