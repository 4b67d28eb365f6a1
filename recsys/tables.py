"""Opening user files (CSV, TSV, parquet) as lazy frames, with one-line errors for wrong files."""

from __future__ import annotations

import codecs
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recsys.errors import RecsysInputError

LINE = "line"  # 1-based line of a record in its source file; the header is line 1


def _check_text_file(path: Path, label: str) -> None:
    """A clear error for a missing, empty, binary or non-UTF-8 file (the whole file is checked)."""
    if not path.exists():
        raise RecsysInputError(f"{label}: file not found: {path}")
    if path.is_dir():
        raise RecsysInputError(f"{label}: {path} is a directory, expected a file")
    if path.stat().st_size == 0:
        raise RecsysInputError(f"{label}: {path} is empty, expected a header line and rows")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            nul = block.find(b"\x00")
            if nul >= 0:
                raise RecsysInputError(
                    f"{label}: {path} is not a text CSV/TSV file (binary content: NUL byte at byte {offset + nul})"
                )
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                # the decoder may hold back up to 3 bytes of an unfinished character from the block before
                raise RecsysInputError(
                    f"{label}: {path} is not UTF-8 text (near byte {max(offset + err.start - 3, 0)}); save it as UTF-8"
                ) from None
            offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise RecsysInputError(f"{label}: {path} is not UTF-8 text (it ends inside a character); save it as UTF-8") from None


def _as_text(dtype: pl.DataType) -> bool:
    """Whether a parquet column of this type can be read as text (not nested, not raw bytes)."""
    return not (dtype.is_nested() or isinstance(dtype, (pl.Binary, pl.Object, pl.Unknown)))


def _check_parses(lf: pl.LazyFrame, columns: list[str], label: str, path: Path, what: str) -> None:
    """Parse every value of `columns` once (streaming), so a malformed file is one clear error here.

    Polars reads lazily: without this, a broken quote or a corrupt page deep in the file would
    surface as a polars exception in the middle of the import, or (worse) as a row count that does
    not match what was parsed.
    """
    try:
        lf.select(pl.col(c).cast(pl.String).str.len_bytes().sum() for c in columns).collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecsysInputError(f"{label}: {path} could not be read as {what} ({detail})") from None


def scan_table(
    path: Path,
    label: str,
    required: list[str],
    optional: list[str] = (),  # type: ignore[assignment]
    separator: str = ",",
    has_header: bool = True,
    column_names: list[str] | None = None,
    quote_char: str | None = '"',
    with_raw: bool = False,
) -> tuple[pl.LazyFrame, list[str]]:
    """Open a CSV/TSV or parquet file lazily with every column as a string.

    Returns the frame (with a `line` column and the required and optional columns the file has) and
    the names of columns that are ignored because the contract does not know them; those are not in
    the frame (so no source column can collide with a column the importer adds), but with
    `with_raw` the frame has `raw`, the whole source row as JSON, ignored columns included.
    A missing required column, or a file that does not parse, is a RecsysInputError naming it.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        if not path.exists():
            raise RecsysInputError(f"{label}: file not found: {path}")
        try:
            lf = pl.scan_parquet(path)
            schema = lf.collect_schema()
        except Exception as err:  # polars raises several types for a broken file
            raise RecsysInputError(f"{label}: {path} is not a readable parquet file ({err})") from None
        names = schema.names()
        unreadable = [n for n in names if n in (*required, *optional) and not _as_text(schema[n])]
        if unreadable:
            raise RecsysInputError(
                f"{label}: {path}: column(s) {unreadable} have type(s) "
                f"{[str(schema[n]) for n in unreadable]}; expected text, numbers or dates"
            )
        # ignored columns that cannot be read as text are left out of `raw` too
        lf = lf.select(pl.col(n).cast(pl.String) for n in names if _as_text(schema[n]))
        names = [n for n in names if _as_text(schema[n])]
        what = "parquet"
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
        what = "CSV"
        offset = 2 if has_header else 1
    missing = [c for c in required if c not in names]
    if missing:
        raise RecsysInputError(
            f"{label}: {path} lacks column(s) {missing}; found {names}; "
            f"expected {required}" + (f" (optional: {list(optional)})" if optional else "")
        )
    known = [c for c in names if c in required or c in optional]
    ignored = [c for c in names if c not in known]
    _check_parses(lf, names if with_raw else known, label, path, what)
    lf = lf.select(*([raw_json(names)] if with_raw else []), *known)
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

    Unparsable values, and years outside 1900..2100, become null; the validator turns those into `bad_timestamp` rejects.
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
    parsed = [plausible(s.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False)) for f in formats]
    return pl.coalesce([*parsed, parse_unix_seconds(s)])


TS_MIN = datetime(1900, 1, 1, tzinfo=timezone.utc)
TS_MAX = datetime(2100, 1, 1, tzinfo=timezone.utc)


def plausible(ts: pl.Expr) -> pl.Expr:
    """A parsed UTC datetime, null outside 1900..2100 (years like 0 or 99999 parse but are not
    timestamps, and Python cannot even represent some of them)."""
    return pl.when(ts.is_between(TS_MIN, TS_MAX, closed="left")).then(ts).otherwise(None)


def parse_unix_seconds(expr: pl.Expr) -> pl.Expr:
    seconds = expr.cast(pl.Float64, strict=False)
    in_range = seconds.is_between(0, 4_102_444_800)  # 1970 .. 2100
    return (
        pl.when(expr.str.contains(r"^\d+(\.\d+)?$") & in_range)
        .then((seconds * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")))
        .otherwise(None)
    )
