"""MovieLens (ml-latest-small / ml-25m layout): ratings.csv, movies.csv, optional tags.csv.

Every rated movie counts as shown; a rating >= `click_threshold` (default 4.0) is a click and the
rating itself is kept in `rating`. Item text is "<title>. Genres: a, b. Tags: x, y." with the
distinct tags users applied (tags carry no rating signal, but note that they are aggregated over the
whole log). Requests are a user's ratings until a gap over the session window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from recsys.core.errors import RecsysInputError
from recsys.core.tables import DAMAGE, DAMAGE_FIELD, parse_unix_seconds, raw_json, scan_table
from recsys.core.validate import DEFAULT_MAX_TEXT_CHARS, DEFAULT_SESSION_GAP_MINUTES, check_items
from recsys.data.importers.common import UnknownItems, finish_import


def _tags_by_movie(path: Path) -> pl.LazyFrame:
    lf, _ = scan_table(path, "TAGS", ["userId", "movieId", "tag", "timestamp"])
    return (
        # a damaged tags row is left out of the item text (tags are not an imported table)
        lf.filter(pl.col("tag").is_not_null() & pl.col("movieId").is_not_null() & pl.col(DAMAGE).is_null())
        .group_by("movieId")
        .agg(tags=pl.col("tag").str.strip_chars().str.to_lowercase().unique(maintain_order=True).sort())
    )


def read_movies(directory: Path, max_text_chars: int, with_tags: bool) -> pl.DataFrame:
    lf, _ = scan_table(directory / "movies.csv", "MOVIES", ["movieId", "title", "genres"])
    tags_path = directory / "tags.csv"
    if with_tags and tags_path.exists():
        lf = lf.join(_tags_by_movie(tags_path), on="movieId", how="left", maintain_order="left")
    else:
        lf = lf.with_columns(tags=pl.lit(None, dtype=pl.List(pl.String)))
    genres = pl.col("genres").fill_null("").str.replace(r"\(no genres listed\)", "").str.split("|").list.eval(
        pl.element().filter(pl.element() != "")
    )
    tags_text = pl.when(pl.col("tags").list.len() > 0).then(
        pl.lit(" Tags: ") + pl.col("tags").list.join(", ") + pl.lit(".")
    ).otherwise(pl.lit(""))
    year = pl.col("title").str.extract(r"\((\d{4})\)\s*$", 1)
    lf = lf.with_columns(genre_list=genres).select(
        "line",
        raw_json(["movieId", "title", "genres"]),
        DAMAGE,
        DAMAGE_FIELD,
        item_id=pl.col("movieId").str.strip_chars(),
        title=pl.col("title").str.strip_chars(),
        text=pl.col("title").str.strip_chars() + pl.lit(". Genres: ") + pl.col("genre_list").list.join(", ")
        + pl.lit(".") + tags_text,
        category=pl.col("genre_list").list.first(),
        attributes=pl.struct(genres=pl.col("genre_list").list.join("|"), year=year).struct.json_encode(),
        created_at=pl.lit(None, dtype=pl.Datetime("us", "UTC")),
    )
    return check_items(lf.collect(), max_text_chars)


def read_ratings(path: Path, click_threshold: float) -> pl.LazyFrame:
    lf, _ = scan_table(path, "RATINGS", ["userId", "movieId", "rating", "timestamp"])
    rating = pl.col("rating").cast(pl.Float32, strict=False)
    rating = pl.when(rating.is_finite()).then(rating).otherwise(None)  # nan/inf are no rating
    return lf.select(
        "line",
        raw_json(["userId", "movieId", "rating", "timestamp"]),
        DAMAGE,
        DAMAGE_FIELD,
        request_id=pl.lit(None, dtype=pl.String),
        user_id=pl.col("userId"),
        item_id=pl.col("movieId"),
        ts=parse_unix_seconds(pl.col("timestamp").str.strip_chars()),
        position=pl.lit(None, dtype=pl.Int32),
        clicked=pl.when(rating.is_null()).then(None).otherwise((rating >= click_threshold).cast(pl.Int8)),
        rating=rating,
    )


def import_movielens(
    directory: Path,
    out: Path,
    *,
    click_threshold: float = 4.0,
    with_tags: bool = True,
    unknown_items: UnknownItems = "reject",
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    session_gap_minutes: int = DEFAULT_SESSION_GAP_MINUTES,
) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise RecsysInputError(f"MovieLens: {directory} is not a directory (expected ratings.csv, movies.csv)")
    items_checked = read_movies(directory, max_text_chars, with_tags)
    events_raw = read_ratings(directory / "ratings.csv", click_threshold)
    source: dict[str, Any] = {
        "kind": "movielens",
        "directory": str(directory),
        "click_threshold": click_threshold,
        "with_tags": with_tags,
    }
    return finish_import(
        out,
        items_checked=items_checked,
        events_raw=events_raw,
        source=source,
        unknown_items=unknown_items,
        clicked_field="rating",
        session_gap_minutes=session_gap_minutes,
    )


__all__ = ["import_movielens"]
