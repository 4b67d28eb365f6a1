"""Opening user files (CSV, TSV, parquet) as lazy frames, with one-line errors for wrong files."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.errors import RecsysInputError

LINE = "line"  # 1-based line of a record in its source file; the header is line 1


def _check_text_file(path: Path, label: str) -> None:
    if not path.exists():
        raise RecsysInputError(f"{label}: file not found: {path}")
    if path.is_dir():
        raise RecsysInputError(f"{label}: {path} is a directory, expected a file")
    if path.stat().st_size == 0:
        raise RecsysInputError(f"{label}: {path} is empty, expected a header line and rows")
    head = path.read_bytes()[:8192]
    if b"\x00" in head:
        raise RecsysInputError(f"{label}: {path} is not a text CSV/TSV file (binary content)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        # A multi-byte character cut at the 8 KiB boundary is fine; anything earlier is not UTF-8.
        if err.start < len(head) - 4:
            raise RecsysInputError(
                f"{label}: {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
            ) from None


def scan_table(
    path: Path,
    label: str,
    required: list[str],
    optional: list[str] = (),  # type: ignore[assignment]
    separator: str = ",",
    has_header: bool = True,
    column_names: list[str] | None = None,
    quote_char: str | None = '"',
) -> tuple[pl.LazyFrame, list[str]]:
    """Open a CSV/TSV or parquet file lazily with every column as a string.

    Returns the frame (with a `line` column) and the names of columns that are ignored because the
    contract does not know them. A missing required column is a RecsysInputError naming it.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        if not path.exists():
            raise RecsysInputError(f"{label}: file not found: {path}")
        try:
            lf = pl.scan_parquet(path)
            names = lf.collect_schema().names()
        except Exception as err:  # polars raises several types for a broken file
            raise RecsysInputError(f"{label}: {path} is not a readable parquet file ({err})") from None
        lf = lf.with_columns(pl.col(n).cast(pl.String) for n in names)
        offset = 1  # parquet has no header; line = row number
    else:
        _check_text_file(path, label)
        try:
            lf = pl.scan_csv(
                path,
                separator=separator,
                has_header=has_header,
                new_columns=column_names,
                infer_schema=False,
                quote_char=quote_char,
                truncate_ragged_lines=True,
            )
            names = lf.collect_schema().names()
        except Exception as err:
            raise RecsysInputError(f"{label}: {path} could not be read as CSV ({err})") from None
        offset = 2 if has_header else 1
    missing = [c for c in required if c not in names]
    if missing:
        raise RecsysInputError(
            f"{label}: {path} lacks column(s) {missing}; found {names}; "
            f"expected {required}" + (f" (optional: {list(optional)})" if optional else "")
        )
    ignored = [c for c in names if c not in required and c not in optional]
    lf = lf.with_row_index(LINE, offset=offset).with_columns(pl.col(LINE).cast(pl.Int64))
    return lf, ignored


def raw_json(columns: list[str]) -> pl.Expr:
    """The source row as a JSON object, kept with every reject so nothing is lost."""
    return pl.struct([pl.col(c) for c in columns]).struct.json_encode().alias("raw")


def blank(expr: pl.Expr) -> pl.Expr:
    """True where a string is null or only whitespace."""
    return expr.is_null() | (expr.str.strip_chars() == "")


def parse_iso_utc(expr: pl.Expr) -> pl.Expr:
    """ISO 8601 (with Z, an offset or none = UTC), a bare date, or unix seconds -> UTC datetime.

    Unparsable values become null; the validator turns those into `bad_timestamp` rejects.
    """
    s = expr.str.strip_chars()
    formats = [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.fZ",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d",
    ]
    parsed = [s.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in formats]
    return pl.coalesce([*parsed, parse_unix_seconds(s)])


def parse_unix_seconds(expr: pl.Expr) -> pl.Expr:
    seconds = expr.cast(pl.Float64, strict=False)
    in_range = seconds.is_between(0, 4_102_444_800)  # 1970 .. 2100
    return (
        pl.when(expr.str.contains(r"^\d+(\.\d+)?$") & in_range)
        .then((seconds * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")))
        .otherwise(None)
    )
