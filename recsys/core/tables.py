"""Opening user files (CSV, TSV, parquet) as lazy frames, with one-line errors for wrong files."""

from __future__ import annotations

import codecs
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recsys.core.errors import RecsysInputError

LINE = "line"  # 1-based line of a record in its source file; the header is line 1


# A file is refused as binary only when its first block mostly is: a stray NUL, control
# character or undecodable byte further in (a torn write, one corrupt line) rejects only its row.
FIRST_BLOCK = 64 * 1024
MAX_BAD_BYTE_SHARE = 0.10  # of the first block: NUL, C0 control (not tab/CR/LF) or undecodable bytes
MAX_BAD_LINE_SHARE = 0.5  # of the first block's lines with undecodable bytes: a file in another encoding
CONTROL_CHARS = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # in a value, damage (tab, CR and LF are structure)
DAMAGE, DAMAGE_FIELD = "damage", "damage_field"  # per row: why it is damaged and in which column (null: intact)


def _undecodable(data: bytes) -> int:
    """How many bytes of `data` are not UTF-8 (one U+FFFD per bad sequence; literal U+FFFD excluded)."""
    return data.decode("utf-8", errors="replace").count("\ufffd") - data.count("\ufffd".encode())


def _check_first_block(path: Path, label: str, block: bytes, whole_file: bool) -> None:
    """Refuse a file that is binary or in another encoding, judged on its first block."""
    if block.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RecsysInputError(f"{label}: {path} is UTF-16 text; save it as UTF-8")
    judged = block if whole_file else block[:-3]  # the block may end inside a character
    controls = sum(judged.count(bytes([c])) for c in range(32) if c not in (9, 10, 13))
    bad = controls + _undecodable(judged)
    if judged and bad > MAX_BAD_BYTE_SHARE * len(judged):
        raise RecsysInputError(f"{label}: {path} is not a text CSV/TSV file (binary content: {bad} of its first "
                               f"{len(judged)} bytes are NUL, control or non-UTF-8 bytes)")
    lines = judged.split(b"\n")
    bad_lines = sum(1 for line in lines if _undecodable(line))
    if len(lines) > 1 and bad_lines > MAX_BAD_LINE_SHARE * len(lines):
        raise RecsysInputError(f"{label}: {path} is not UTF-8 text ({bad_lines} of its first {len(lines)} lines "
                               "have bytes that are not UTF-8); save it as UTF-8")


def _check_text_file(path: Path, label: str) -> bool:
    """A clear error for a missing, empty, binary or wrongly encoded file. Returns whether any
    byte in the file is not UTF-8: it is then read with such bytes as U+FFFD, and the rows that
    hold one are rejected (`invalid_utf8`)."""
    if not path.exists():
        raise RecsysInputError(f"{label}: file not found: {path}")
    if path.is_dir():
        raise RecsysInputError(f"{label}: {path} is a directory, expected a file")
    size = path.stat().st_size
    if size == 0:
        raise RecsysInputError(f"{label}: {path} is empty, expected a header line and rows")
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as handle:
        first = handle.read(FIRST_BLOCK)
        _check_first_block(path, label, first, whole_file=len(first) == size)
        try:
            decoder.decode(first)
            for block in iter(lambda: handle.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return True
    return False


def damage(columns: list[str], lossy: bool) -> list[pl.Expr]:
    """`damage` and `damage_field`: the first column (in file order) holding a NUL byte, an
    undecodable byte (U+FFFD where the file had some) or another control character."""
    checks = []
    for c in columns:
        value = pl.col(c).cast(pl.String)
        checks.append((value.str.contains("\x00", literal=True), "nul_byte", c))
        if lossy:
            checks.append((value.str.contains("\ufffd", literal=True), "invalid_utf8", c))
        checks.append((value.str.contains(CONTROL_CHARS), "control_character", c))
    reason = pl.lit(None, dtype=pl.String)
    field = pl.lit(None, dtype=pl.String)
    for is_bad, why, where in reversed(checks):
        hit = is_bad.fill_null(False)
        reason = pl.when(hit).then(pl.lit(why)).otherwise(reason)
        field = pl.when(hit).then(pl.lit(where)).otherwise(field)
    return [reason.alias(DAMAGE), field.alias(DAMAGE_FIELD)]


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
        lossy = False
        offset = 1  # parquet has no header; line = row number
    else:
        lossy = _check_text_file(path, label)
        try:
            lf = pl.scan_csv(
                path,
                separator=separator,
                has_header=has_header,
                new_columns=column_names,
                infer_schema=False,
                quote_char=quote_char,
                truncate_ragged_lines=True,
                encoding="utf8-lossy" if lossy else "utf8",
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
    _check_parses(lf, names, label, path, what)  # every column: the damage checks read them all
    lf = lf.select(*([raw_json(names)] if with_raw else []), *known, *damage(names, lossy))
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
