"""MIND (Microsoft News Dataset) TSV: behaviors.tsv + news.tsv, no header rows.

behaviors: impression_id, user_id, time (M/D/YYYY h:mm:ss AM/PM, taken as UTC), history
(space-separated news ids clicked before the log), impressions (`N123-1 N456-0`).
news: news_id, category, subcategory, title, abstract, url, title_entities, abstract_entities.

Each impression candidate becomes one event; the impression id is the request id and a
candidate's 1-based place in the list is its position. A user's history (taken from their first
behaviors line) becomes history.parquet. Titles contain bare quotes, so quoting is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from recsys.core.tables import DAMAGE, DAMAGE_FIELD, blank, plausible, raw_json, scan_table
from recsys.core.validate import DEFAULT_MAX_TEXT_CHARS, check_items
from recsys.data.importers.common import UnknownItems, finish_import

NEWS_COLUMNS = ["news_id", "category", "subcategory", "title", "abstract", "url", "title_entities", "abstract_entities"]
BEHAVIOR_COLUMNS = ["impression_id", "user_id", "time", "history", "impressions"]
MIND_TIME = "%m/%d/%Y %I:%M:%S %p"


def read_news(path: Path, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> pl.DataFrame:
    lf, _ = scan_table(path, "NEWS", NEWS_COLUMNS, separator="\t", has_header=False,
                       column_names=NEWS_COLUMNS, quote_char=None)
    lf = lf.select(
        "line",
        raw_json(["news_id", "category", "subcategory", "title", "abstract", "url"]),
        DAMAGE,
        DAMAGE_FIELD,
        item_id=pl.col("news_id"),
        title=pl.col("title"),
        text=pl.col("abstract"),
        category=pl.col("category"),
        attributes=pl.struct(subcategory=pl.col("subcategory"), url=pl.col("url")).struct.json_encode(),
        created_at=pl.lit(None, dtype=pl.Datetime("us", "UTC")),
    )
    return check_items(lf.collect(), max_text_chars)


def read_behaviors(path: Path) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(events, history) as raw canonical frames; one event per impression candidate."""
    lf, _ = scan_table(path, "BEHAVIORS", BEHAVIOR_COLUMNS, separator="\t", has_header=False,
                       column_names=BEHAVIOR_COLUMNS, quote_char=None)
    tokens = pl.col("impressions").fill_null("").str.strip_chars().str.split(" ")
    events = (
        lf.with_columns(token=tokens)
        .with_columns(position=pl.int_ranges(1, pl.col("token").list.len() + 1, dtype=pl.Int32))
        .explode("token", "position")
    )  # a line with no impressions gives one row with an empty token: a missing_item_id reject
    label = pl.col("token").str.extract(r"-([01])$", 1)
    events = events.select(
        "line",
        raw_json(["impression_id", "user_id", "time", "token"]),
        DAMAGE,
        DAMAGE_FIELD,
        request_id=pl.col("impression_id").str.strip_chars(),
        user_id=pl.col("user_id"),
        item_id=pl.col("token").str.replace(r"-[^-]*$", ""),
        ts=plausible(pl.col("time").str.strip_chars().str.to_datetime(MIND_TIME, time_unit="us", time_zone="UTC", strict=False)),
        position="position",
        clicked=label.cast(pl.Int8),
        rating=pl.lit(None, dtype=pl.Float32),
    )
    first_rows = lf.filter(pl.col("line") == pl.col("line").min().over("user_id"))
    history = (
        first_rows.with_columns(item_id=pl.col("history").fill_null("").str.strip_chars().str.split(" "))
        .with_columns(order=pl.int_ranges(0, pl.col("item_id").list.len(), dtype=pl.Int32))
        .explode("item_id", "order")
        .filter(~blank(pl.col("item_id")))
        .select(
            "line",
            pl.struct(user_id=pl.col("user_id"), history_item=pl.col("item_id")).struct.json_encode().alias("raw"),
            DAMAGE,
            DAMAGE_FIELD,
            "user_id",
            "item_id",
            "order",
        )
    )
    return events, history


def import_mind(
    behaviors_path: Path,
    news_path: Path,
    out: Path,
    *,
    unknown_items: UnknownItems = "reject",
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> dict[str, Any]:
    items_checked = read_news(news_path, max_text_chars)
    events_raw, history_raw = read_behaviors(behaviors_path)
    source: dict[str, Any] = {"kind": "mind", "behaviors": str(behaviors_path), "news": str(news_path)}
    return finish_import(
        out,
        items_checked=items_checked,
        events_raw=events_raw,
        source=source,
        unknown_items=unknown_items,
        ts_field="time",
        clicked_field="impressions",
        history_raw=history_raw,
    )

