"""Row-level validation shared by every importer: nothing is dropped without a reason.

Importers map their source onto canonical columns (strings and parsed values, null where parsing
failed) plus `line` and `raw`; these functions attach a `reason`/`field` to every bad row, so the
accepted rows and the rejects partition the input exactly.
"""

from __future__ import annotations

import json

import polars as pl

from recsys.core.schemas import EVENTS_SCHEMA, ITEMS_SCHEMA, REJECTS_SCHEMA, conform
from recsys.core.tables import DAMAGE, DAMAGE_FIELD, blank

DEFAULT_MAX_TEXT_CHARS = 20_000
DEFAULT_SESSION_GAP_MINUTES = 30


Check = tuple[pl.Expr, "str | pl.Expr", "str | pl.Expr"]


def _first_failure(checks: list[Check]) -> tuple[pl.Expr, pl.Expr]:
    """Given (is_bad, reason, field) checks in priority order, the first failing reason and field
    (a reason or field may be an expression: the row's damage says its own)."""
    reason = pl.lit(None, dtype=pl.String)
    field = pl.lit(None, dtype=pl.String)
    for is_bad, why, where in reversed(checks):
        reason = pl.when(is_bad).then(pl.lit(why) if isinstance(why, str) else why).otherwise(reason)
        field = pl.when(is_bad).then(pl.lit(where) if isinstance(where, str) else where).otherwise(field)
    return reason.alias("reason"), field.alias("field")


def damaged(frame_columns: list[str]) -> list[Check]:
    """The first check of every table: a row with a NUL, control or undecodable byte
    (recsys.core.tables.damage) is rejected with that reason, naming the column."""
    if DAMAGE not in frame_columns:
        return []
    return [(pl.col(DAMAGE).is_not_null(), pl.col(DAMAGE), pl.col(DAMAGE_FIELD))]


def _damage_columns(frame: pl.DataFrame | pl.LazyFrame) -> list[str]:
    names = frame.collect_schema().names()
    return [c for c in (DAMAGE, DAMAGE_FIELD) if c in names]


def check_items(raw: pl.DataFrame, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> pl.DataFrame:
    """Attach `reason`/`field` to item rows.

    Expects columns line, raw, item_id, title, text (strings), optional category, attributes,
    created_at. The first row of an item id wins; a later row with the same id is
    `duplicate_item_conflict` when its title or text differ, else `duplicate_item`.
    """
    df = raw.with_columns(
        pl.col("item_id").str.strip_chars(),
        pl.col("title").fill_null(""),
        pl.col("text").fill_null(""),
    )
    intact = pl.col(DAMAGE).is_null() if DAMAGE in df.columns else pl.lit(True)
    first = df.filter(~blank(pl.col("item_id")) & intact).unique("item_id", keep="first", maintain_order=True)
    first = first.select(
        pl.col("item_id"),
        pl.col("line").alias("_first_line"),
        pl.col("title").alias("_first_title"),
        pl.col("text").alias("_first_text"),
    )
    df = df.join(first, on="item_id", how="left", maintain_order="left")
    is_dup = pl.col("_first_line").is_not_null() & (pl.col("line") != pl.col("_first_line"))
    differs = (pl.col("title") != pl.col("_first_title")) | (pl.col("text") != pl.col("_first_text"))
    length = pl.col("title").str.len_chars() + pl.col("text").str.len_chars()
    reason, field = _first_failure(
        [
            *damaged(df.columns),
            (blank(pl.col("item_id")), "missing_item_id", "item_id"),
            (is_dup & differs, "duplicate_item_conflict", "item_id"),
            (is_dup, "duplicate_item", "item_id"),
            (length > max_text_chars, "text_too_long", "text"),
        ]
    )
    return df.with_columns(reason, field).drop("_first_line", "_first_title", "_first_text", *_damage_columns(df))


def check_events(
    raw: pl.LazyFrame,
    known_item_ids: pl.LazyFrame,
    ts_field: str = "timestamp",
    clicked_field: str = "clicked",
) -> pl.LazyFrame:
    """Attach `reason`/`field` to event rows.

    Expects columns line, raw, user_id, item_id, ts (datetime, null = unparsable), clicked (Int8,
    null = not 0/1), and optional request_id, position, rating. `known_item_ids` has `item_id`.
    """
    known = known_item_ids.select("item_id").unique().with_columns(_known=pl.lit(True))
    lf = raw.with_columns(pl.col("user_id").str.strip_chars(), pl.col("item_id").str.strip_chars())
    lf = lf.join(known, on="item_id", how="left")
    reason, field = _first_failure(
        [
            *damaged(lf.collect_schema().names()),
            (blank(pl.col("user_id")), "missing_user_id", "user_id"),
            (blank(pl.col("item_id")), "missing_item_id", "item_id"),
            (pl.col("ts").is_null(), "bad_timestamp", ts_field),
            (pl.col("clicked").is_null(), "bad_clicked", clicked_field),
            (pl.col("_known").is_null(), "unknown_item", "item_id"),
        ]
    )
    return lf.with_columns(reason, field).drop("_known", *_damage_columns(lf))


def derive_request_ids(lf: pl.LazyFrame, gap_minutes: int = DEFAULT_SESSION_GAP_MINUTES) -> pl.LazyFrame:
    """Fill a missing request_id: a user's rows form one request until a gap over `gap_minutes`.

    The id is `<user_id>#<n>` with n counting that user's requests from 0 in time order, so it is
    stable for the same input.
    """
    ordered = lf.sort("user_id", "ts", "line")
    gap = pl.col("ts").diff().over("user_id") > pl.duration(minutes=gap_minutes)
    session_no = gap.fill_null(False).cast(pl.Int64).cum_sum().over("user_id")
    derived = pl.col("user_id") + pl.lit("#") + session_no.cast(pl.String)
    return ordered.with_columns(
        pl.when(blank(pl.col("request_id"))).then(derived).otherwise(pl.col("request_id")).alias("request_id")
    )


def accepted_events(checked: pl.LazyFrame, gap_minutes: int = DEFAULT_SESSION_GAP_MINUTES) -> pl.LazyFrame:
    """The valid rows in the events schema, requests derived where missing, in time order."""
    good = checked.filter(pl.col("reason").is_null())
    if "request_id" not in good.collect_schema().names():
        good = good.with_columns(request_id=pl.lit(None, dtype=pl.String))
    good = derive_request_ids(good, gap_minutes)
    return conform(good.sort("ts", "request_id", "line"), EVENTS_SCHEMA)  # type: ignore[return-value]


def accepted_items(checked: pl.DataFrame) -> pl.DataFrame:
    return conform(checked.filter(pl.col("reason").is_null()), ITEMS_SCHEMA)  # type: ignore[return-value]


def rejects(checked: pl.LazyFrame | pl.DataFrame, source: str) -> pl.LazyFrame:
    bad = checked.lazy().filter(pl.col("reason").is_not_null()).with_columns(source=pl.lit(source))
    return conform(bad, REJECTS_SCHEMA)  # type: ignore[return-value]


def placeholder_items(*checked: pl.LazyFrame) -> pl.DataFrame:
    """Items for ids that only events/history mention (policy `placeholder`): empty text, flagged."""
    unknown = [c.filter(pl.col("reason") == "unknown_item").select("item_id") for c in checked]
    ids = pl.concat(unknown).unique().sort("item_id").collect()
    return ids.with_columns(
        title=pl.lit(""),
        text=pl.lit(""),
        category=pl.lit(None, dtype=pl.String),
        attributes=pl.lit(json.dumps({"placeholder": "true"})),
        created_at=pl.lit(None, dtype=ITEMS_SCHEMA["created_at"]),
    )
