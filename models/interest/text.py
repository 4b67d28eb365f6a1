"""The one recipe for an item's text, shared by training, item vectors and cold-item scoring."""

from __future__ import annotations

import polars as pl


def item_text_expr() -> pl.Expr:
    """title + ". " + text, without repeating the title when the text already starts with it."""
    title = pl.col("title").fill_null("").str.strip_chars()
    body = pl.col("text").fill_null("").str.strip_chars()
    joined = (
        pl.when(body == "").then(title)
        .when(title == "").then(body)
        .when(body.str.starts_with(title)).then(body)
        .otherwise(title + pl.lit(". ") + body)
    )
    return pl.when(joined == "").then(pl.col("item_id")).otherwise(joined).alias("item_text")


def item_texts(items: pl.DataFrame) -> pl.DataFrame:
    """(item_id, item_text) for every item; an item with neither title nor text uses its id."""
    return items.select("item_id", item_text_expr())
