"""Property tests for every importer (issue 8): any input gives a dataset or one clear error.

For any bytes in any input file, an importer either raises RecsysInputError with a message, or
writes a dataset that `validate_dataset` accepts and whose manifest shows rows in = rows accepted
+ rows rejected for every table. Well-formed files must import (bad values become counted
rejects, never a whole-file error) and every data row written must be counted as a row in.

Inputs are (a) arbitrary bytes/text and (b) plausible files (valid or mangled header, rows of
random, empty, huge, unicode, quoted, multi-line values, bad timestamps and labels, duplicated
ids, missing/extra columns) with file-level damage (BOM, CRLF, NUL bytes, stray bytes, bad UTF-8
past the first 8 KiB, truncation). Examples that once crashed an importer are pinned with
@example.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from recsys.core.dataset import validate_dataset
from recsys.core.errors import RecsysInputError
from recsys.data.importers.events import import_events
from recsys.data.importers.mind import import_mind
from recsys.data.importers.movielens import import_movielens

# RECSYS_FUZZ_EXAMPLES=1000 for a longer hunt
FUZZ = settings(
    max_examples=int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the property every import must satisfy ----------------------------------------------------


def check_import(run: Callable[[Path], dict[str, Any]], out: Path, *, must_succeed: bool = False) -> dict[str, Any] | None:
    """Run an import into `out`: a RecsysInputError with a message, or a valid, balanced dataset.

    Any other exception propagates and fails the property. Returns the manifest (None on error).
    """
    try:
        manifest = run(out)
    except RecsysInputError as err:
        assert str(err).strip(), "RecsysInputError without a message"
        event("clear error", " ".join(w for w in str(err).split()[:3] if "/" not in w))
        if must_succeed:
            raise AssertionError(f"a well-formed input was refused: {err}") from err
        return None
    assert {"items", "events"} <= set(manifest["rows_in"])
    rejected: Counter[str] = Counter()
    for key, n in manifest["rejects_by_reason"].items():
        source, reason = key.split("/", 1)
        assert reason and n > 0
        rejected[source] += n
    assert set(rejected) <= set(manifest["rows_in"]), "rejects from a table that has no rows in"
    accepted = {
        "items": manifest["rows"]["items"] - manifest.get("placeholder_items", 0),
        "events": manifest["rows"]["events"],
        "history": manifest["rows"].get("history", 0),
    }
    for table, n_in in manifest["rows_in"].items():
        assert n_in == accepted[table] + rejected[table], (table, n_in, accepted[table], rejected[table])
    assert manifest["rows"]["rejects"] == sum(rejected.values())
    rejects = pl.read_parquet(out / "rejects.parquet")
    assert sum(rejects.select("source", "line", "reason", "field", "raw").null_count().row(0)) == 0
    assert validate_dataset(out) == []
    event("dataset", "with rejects" if rejected else "no rejects")
    return manifest


# --- strategies --------------------------------------------------------------------------------

NASTY_VALUES = [
    "", " ", "  \t ", '"', '""', 'a"b', '"quoted"', '"x, y"', "a,b", "a\tb", "a\nb", "a\r\nb", "\r", "\n",
    "\ufeff", "\ufeffa", "é", "Ω≈ç√", "🙂", "\u2028", "\u200b", "NULL", "null", "NaN", "nan", "inf", "-inf",
    "-1", "1e400", "0", "1", "\\", "'", "#", "N/A", "\x1f", "a\x00b",
]
HUGE = st.one_of(st.integers(60, 400).map(lambda n: "x" * n), st.just("y" * 25_000))
ITEM_IDS = ["a", "b", "c", " a ", "1", "2", "N1", "N2", "é"]
USER_IDS = ["u1", "u2", " u1", "", "U1"]
TIMESTAMPS = [
    "2024-01-01T10:00:00Z", "2024-01-01T10:00:05+01:00", "2024-01-01 10:00:00", "2024-01-02", "2024-01-01T10:00",
    "2024-01-01T10:00:00.123456Z", "1700000000", "1700000000.5", "0", "4102444801", "-5", "1e9", "0000-01-01",
    "9999-12-31T23:59:59Z", "99999-01-01", "2024-13-01", "2024-02-30", "2024-01-01T25:00:00Z", "yesterday",
    "1899-12-31", "2100-01-01", "1970-01-01T00:00:00Z",
]
MIND_TIMES = ["11/11/2019 9:05:58 AM", "11/11/2019 1:05:00 PM", "1/1/0000 1:00:00 AM", "13/40/2019 9:05:58 AM",
              "11/11/2019 13:05:00 PM", "11/11/99999 9:05:58 AM", "11/11/2019", "2019-11-11T09:05:58Z"]
CLICKED = ["0", "1", " 1 ", "2", "-1", "true", "1.0", "01", ""]


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in n draws (Hypothesis favours small integers, so not integers(0, n) == 0)."""
    return st.sampled_from([False] * (n - 1) + [True])


def chars(banned: str = "") -> st.SearchStrategy[str]:
    return st.characters(blacklist_characters=banned, blacklist_categories=("Cs",))


def nasty(banned: str = "") -> st.SearchStrategy[str]:
    return st.sampled_from([v for v in NASTY_VALUES if not any(c in v for c in banned)])


def values(choices: list[str] | None, banned: str = "") -> st.SearchStrategy[str]:
    """Mostly plausible values (`choices`; None = free text), sometimes anything but `banned`."""
    free = st.one_of(st.text(chars(banned), max_size=20), nasty(banned), HUGE)
    if choices is None:
        return free
    return st.one_of(st.sampled_from(choices), st.sampled_from(choices), free)


def texts(banned: str = "") -> st.SearchStrategy[str]:
    return values(None, banned)


NO_NUL = chars("\x00")
NO_TSV = chars("\x00\t\n\r")


EVENT_FIELDS: dict[str, list[str] | None] = {
    "user_id": USER_IDS,
    "item_id": ITEM_IDS + ["zz", ""],
    "timestamp": TIMESTAMPS,
    "clicked": CLICKED,
    "request_id": ["r1", "r2", "", " "],
    "position": ["1", "2", "0", "-3", "99999999999", "x", "1.5"],
    "rating": ["4.5", "1", "nan", "inf", "-inf", "", "x"],
}
ITEM_FIELDS: dict[str, list[str] | None] = {
    "item_id": ITEM_IDS,
    "title": None,
    "text": None,
    "category": None,
    "attributes": ['{"a": "b"}', "{}", "not json", "[1, 2]"],
    "created_at": TIMESTAMPS,
}
MOVIE_FIELDS: dict[str, list[str] | None] = {
    "movieId": ITEM_IDS,
    "title": ["Heat (1995)", "Toy Story, The (1995)", "(no year)", "X (99999)"],
    "genres": ["Action|Comedy", "(no genres listed)", "|", "||Drama|", ""],
}
RATING_FIELDS: dict[str, list[str] | None] = {
    "userId": ["1", "2", " 3 "],
    "movieId": ITEM_IDS,
    "rating": ["4.0", "3.5", "5", "0", "nan", "inf", "-1", "five", ""],
    "timestamp": ["964982703", "964982931", "0", "-1", "1e9", "4102444801", "964982703.5", "x"],
}
TAG_FIELDS: dict[str, list[str] | None] = {
    "userId": ["1", "2"],
    "movieId": ITEM_IDS,
    "tag": None,
    "timestamp": ["1", "964982703"],
}
# Names an importer uses for its own columns, so a source column with one of them must not collide.
EXTRA_COLUMNS = ["line", "raw", "reason", "field", "source", "_known", "_first_line", "_first_title", "_first_text",
                 "tags", "token", "order", "ts", "genre_list", "position", "extra", "", "User_ID", "user_id "]


@st.composite
def header_csv(draw: st.DrawFn, fields: dict[str, list[str] | None], required: list[str],
               *, clean: bool) -> tuple[bytes, int]:
    """A CSV with a header: (content, data rows written). `clean`: well-formed (quoted by the csv
    module, no NUL, every required column); otherwise columns and rows are mangled too."""
    optional = [c for c in fields if c not in required]
    columns = list(required) + draw(st.lists(st.sampled_from(optional), unique=True)) if optional else list(required)
    columns += draw(st.lists(st.sampled_from(EXTRA_COLUMNS), max_size=2, unique=True))
    if not clean and draw(one_in(6)):
        if draw(st.booleans()):
            columns.remove(draw(st.sampled_from(required)))
        else:
            columns.append(draw(st.sampled_from(columns)))  # a duplicated name
    columns = draw(st.permutations(columns))
    banned = "\x00" if clean else ""
    rows = draw(st.lists(st.tuples(*(values(fields.get(c), banned) for c in columns)).map(list), max_size=8))
    if not clean:
        for row in rows:  # ragged rows: fields missing or extra
            if draw(one_in(8)):
                del row[draw(st.integers(0, len(row))):]
            elif draw(one_in(8)):
                row.extend(draw(st.lists(texts(), min_size=1, max_size=3)))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(columns)
    if clean or draw(st.booleans()):
        writer.writerows(rows)
    else:  # no quoting at all: embedded separators, quotes and newlines break the structure
        buf.write("".join(",".join(row) + newline for row in rows))
    text = buf.getvalue()
    if clean and not draw(st.booleans()):
        text = text[: -len(newline)]  # no newline after the last row
    data = (("\ufeff" if draw(st.booleans()) else "") + text).encode()
    return (data if clean else draw(damaged(data))), len(rows)


@st.composite
def tsv_lines(draw: st.DrawFn, n_fields: int, make_row: Callable[[st.DrawFn], list[str]], *, clean: bool) -> tuple[bytes, list[list[str]]]:
    """Headerless TSV (MIND): (content, rows written)."""
    rows = [make_row(draw) for _ in range(draw(st.integers(1, 6)))]  # an empty file: see anything()
    if not clean:
        for row in rows:
            if draw(one_in(8)):
                del row[draw(st.integers(0, len(row))):]
            elif draw(one_in(8)):
                row.extend(draw(st.lists(texts(), min_size=1, max_size=3)))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    data = "".join("\t".join(row) + newline for row in rows).encode()
    if clean:  # the generator writes rows of the format's width; damage comes after
        assert len(rows[0]) == n_fields
    return (data if clean else draw(damaged(data))), rows


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """File-level damage: NUL and stray bytes, invalid UTF-8 (also past the first 8 KiB), truncation."""
    kind = draw(st.sampled_from(["none"] * 16 + ["nul", "bytes", "bad_utf8", "late", "truncate", "bom_mid"]))
    at = draw(st.integers(0, len(data)))
    if kind == "nul":
        return data[:at] + b"\x00" + data[at:]
    if kind == "bytes":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if kind == "bad_utf8":
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\x80"])) + data[at:]
    if kind == "late":  # valid for the first 8 KiB (a long quoted value), broken after
        pad = b'"' + b"p" * 9000 + b'"' if draw(st.booleans()) else b"p" * 9000
        return data + pad + draw(st.sampled_from([b"\xff", b"\x00", b"\xc3"])) + b"\n"
    if kind == "truncate":
        return data[:at]
    if kind == "bom_mid":
        return data[:at] + b"\xef\xbb\xbf" + data[at:]
    return data


def anything() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, arbitrary text, or text that looks a bit like CSV/TSV."""
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.lists(st.lists(st.text(NO_NUL, max_size=8), max_size=6).map(",".join), max_size=6).map(lambda r: "\n".join(r).encode()),
        st.lists(st.lists(st.text(NO_NUL, max_size=8), max_size=9).map("\t".join), max_size=6).map(lambda r: "\n".join(r).encode()),
    )


def file_or_anything(plausible: st.SearchStrategy[tuple[bytes, Any]]) -> st.SearchStrategy[bytes]:
    first = plausible.map(lambda pair: pair[0])
    return st.one_of(first, first, first, first, anything())


EVENTS_FILE = file_or_anything(header_csv(EVENT_FIELDS, ["user_id", "item_id", "timestamp", "clicked"], clean=False))
ITEMS_FILE = file_or_anything(header_csv(ITEM_FIELDS, ["item_id", "title", "text"], clean=False))
POLICY = st.sampled_from(["reject", "placeholder"])
MAX_TEXT = st.sampled_from([50, 20_000])

EVENTS_HEADER = b"user_id,item_id,timestamp,clicked\n"
GOOD_ITEMS = b"item_id,title,text\na,A,x\nb,B,y\n"


def _events(events: bytes, items: bytes, suffix: str = ".csv", **kw: Any) -> Callable[[Path], dict[str, Any]]:
    def run(out: Path) -> dict[str, Any]:
        (out.parent / f"events{suffix}").write_bytes(events)
        (out.parent / f"items{suffix}").write_bytes(items)
        return import_events(out.parent / f"events{suffix}", out.parent / f"items{suffix}", out, **kw)
    return run


def in_tmp(run: Callable[[Path], dict[str, Any]], **kw: Any) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        return check_import(run, Path(tmp) / "ds", **kw)


# --- events (contract CSV + items CSV) ----------------------------------------------------------


@FUZZ
@given(events=EVENTS_FILE, items=ITEMS_FILE, unknown_items=POLICY, max_text_chars=MAX_TEXT)
# a source column named like one the importer adds (`line`) crashed with polars DuplicateError
@example(events=EVENTS_HEADER.replace(b"\n", b",line\n") + b"u,a,2024-01-01,1,5\n", items=GOOD_ITEMS,
         unknown_items="reject", max_text_chars=50)
@example(events=EVENTS_HEADER, items=b"item_id,title,text,line\na,A,x,1\n", unknown_items="reject", max_text_chars=50)
# invalid UTF-8 / NUL past the first 8 KiB: ComputeError mid-import / silently read as data
@example(events=EVENTS_HEADER + b"u,a,2024-01-01,1\n" * 600 + b"u,\xff,2024-01-01,1\n", items=GOOD_ITEMS,
         unknown_items="reject", max_text_chars=50)
@example(events=EVENTS_HEADER + b"u,a,2024-01-01,1\n" * 600 + b"u,\x00,2024-01-01,1\n", items=GOOD_ITEMS,
         unknown_items="reject", max_text_chars=50)
# malformed quoting: ComputeError at collect time, while pl.len() said 0 rows
@example(events=EVENTS_HEADER + b'u,a"b,2024-01-01,1\n', items=GOOD_ITEMS, unknown_items="reject", max_text_chars=50)
@example(events=EVENTS_HEADER + b'u,"a,2024-01-01,1\nu,a,2024-01-01,1\n', items=GOOD_ITEMS,
         unknown_items="reject", max_text_chars=50)
# year 0 parsed as a timestamp; building the manifest raised ValueError (year 0 is out of range)
@example(events=EVENTS_HEADER + b"u,a,0000-01-01,1\n", items=GOOD_ITEMS, unknown_items="reject", max_text_chars=50)
def test_events_any_bytes_give_a_dataset_or_a_clear_error(events: bytes, items: bytes, unknown_items: str,
                                                          max_text_chars: int) -> None:
    in_tmp(_events(events, items, unknown_items=unknown_items, max_text_chars=max_text_chars))


@FUZZ
@given(
    events=header_csv(EVENT_FIELDS, ["user_id", "item_id", "timestamp", "clicked"], clean=True),
    items=header_csv(ITEM_FIELDS, ["item_id", "title", "text"], clean=True),
    unknown_items=POLICY,
)
def test_events_well_formed_files_import_and_every_row_is_counted(events: tuple[bytes, int], items: tuple[bytes, int],
                                                                  unknown_items: str) -> None:
    manifest = in_tmp(_events(events[0], items[0], unknown_items=unknown_items, max_text_chars=50), must_succeed=True)
    assert manifest is not None
    assert manifest["rows_in"] == {"items": items[1], "events": events[1]}


PARQUET_COLUMN = st.sampled_from(["str", "int", "float", "bool", "null", "date", "datetime", "list", "struct", "binary"])


def _parquet_column(kind: str, n: int, text: list[str]) -> pl.Series:
    return {
        "str": pl.Series(text, dtype=pl.String),
        "int": pl.Series(range(n), dtype=pl.Int64),
        "float": pl.Series([float("nan") if i % 2 else 4.5 for i in range(n)], dtype=pl.Float64),
        "bool": pl.Series([i % 2 == 0 for i in range(n)], dtype=pl.Boolean),
        "null": pl.Series([None] * n, dtype=pl.Null),
        "date": pl.Series([date(2024, 1, 1 + i % 28) for i in range(n)], dtype=pl.Date),
        "datetime": pl.Series([datetime(2024, 1, 1, i % 24) for i in range(n)], dtype=pl.Datetime("us")),
        "list": pl.Series([[i] for i in range(n)]),
        "struct": pl.Series([{"a": i} for i in range(n)]),
        "binary": pl.Series([t.encode()[:3] + b"\xff" for t in text], dtype=pl.Binary),
    }[kind]


@st.composite
def parquet_file(draw: st.DrawFn, names: list[str]) -> bytes:
    """A parquet file whose columns have any type, or a valid one with bytes flipped."""
    n = draw(st.integers(0, 4))
    columns = names + draw(st.lists(st.sampled_from(EXTRA_COLUMNS[:6]), max_size=2, unique=True))
    if draw(st.booleans()):
        columns = columns[1:]
    frame = pl.DataFrame(
        [
            _parquet_column(
                draw(PARQUET_COLUMN), n, draw(st.lists(st.sampled_from(ITEM_IDS + TIMESTAMPS + CLICKED), min_size=n, max_size=n))
            ).alias(c)
            for c in dict.fromkeys(columns)
        ]
    )
    buf = io.BytesIO()
    frame.write_parquet(buf)
    data = buf.getvalue()
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return data


@FUZZ
@given(
    events=st.one_of(parquet_file(["user_id", "item_id", "timestamp", "clicked"]), st.binary(max_size=64)),
    items=st.one_of(parquet_file(["item_id", "title", "text"]), st.binary(max_size=64)),
)
def test_events_parquet_inputs_give_a_dataset_or_a_clear_error(events: bytes, items: bytes) -> None:
    in_tmp(_events(events, items, suffix=".parquet"))


def test_parquet_nested_column_is_a_clear_error(tmp_path: Path) -> None:
    """Found by the property above: a list/struct column crashed the cast to text (InvalidOperationError)."""
    _parquet_nested(tmp_path)


def _parquet_nested(tmp_path: Path) -> None:
    pl.DataFrame({"item_id": [[1]], "title": [{"a": 1}], "text": ["x"]}).write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1], "clicked": [True]}).write_parquet(
        tmp_path / "events.parquet"
    )
    with pytest.raises(RecsysInputError, match=r"column\(s\) \['item_id', 'title'\]"):
        import_events(tmp_path / "events.parquet", tmp_path / "items.parquet", tmp_path / "ds")


# --- MIND (headerless TSV) ----------------------------------------------------------------------


def _news_row(clean: bool) -> Callable[[st.DrawFn], list[str]]:
    news_id = st.sampled_from(["N1", "N2", "N3", " N1", ""]) if clean else values(["N1", "N2", "N3"])
    field = texts("\x00\t\n\r") if clean else st.one_of(texts("\t\n\r"), texts("\t\n\r"), texts())

    def row(draw: st.DrawFn) -> list[str]:
        return [draw(news_id)] + [draw(field) for _ in range(7)]
    return row


TOKEN_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="\x85")


def _token(clean: bool) -> st.SearchStrategy[str]:
    base = st.one_of(
        st.sampled_from(["N1-1", "N2-0", "N3-1", "N9-0", "N1-x", "N1", "-1", "N1--1", "N1-1-0", "N2-01", "N2-2"]),
        st.text(TOKEN_CHARS, min_size=1, max_size=6),
    )
    return base if clean else st.one_of(base, texts())


def _behaviors_row(clean: bool) -> Callable[[st.DrawFn], list[str]]:
    spaces = st.sampled_from([" ", "  "])
    def row(draw: st.DrawFn) -> list[str]:
        text = st.text(NO_TSV, max_size=8) if clean else st.one_of(texts("\t\n\r"), texts("\t\n\r"), texts())
        impressions = draw(st.lists(_token(clean), max_size=4))
        history = draw(st.lists(_token(clean), max_size=3))
        return [
            draw(st.one_of(st.sampled_from(["1", "2", ""]), text)),
            draw(st.one_of(st.sampled_from(["U1", "U2", "", " U1"]), text)),
            draw(st.one_of(st.sampled_from(MIND_TIMES), text)),
            draw(spaces).join(history) + draw(st.sampled_from(["", " "])),
            draw(spaces).join(impressions) + draw(st.sampled_from(["", " "])),
        ]
    return row


def _mind(behaviors: bytes, news: bytes, **kw: Any) -> Callable[[Path], dict[str, Any]]:
    def run(out: Path) -> dict[str, Any]:
        (out.parent / "behaviors.tsv").write_bytes(behaviors)
        (out.parent / "news.tsv").write_bytes(news)
        return import_mind(out.parent / "behaviors.tsv", out.parent / "news.tsv", out, **kw)
    return run


NEWS = b"N1\tc\ts\tT\tA\tu\t[]\t[]\nN2\tc\ts\tT2\tA2\tu\t[]\t[]\n"


@FUZZ
@given(
    behaviors=file_or_anything(tsv_lines(5, _behaviors_row(False), clean=False)),
    news=file_or_anything(tsv_lines(8, _news_row(False), clean=False)),
    unknown_items=POLICY,
)
# year 0 parsed as a time; building the manifest raised ValueError (year 0 is out of range)
@example(behaviors=b"1\tU1\t1/1/0000 1:00:00 AM\tN1\tN1-1\n", news=NEWS, unknown_items="reject")
def test_mind_any_bytes_give_a_dataset_or_a_clear_error(behaviors: bytes, news: bytes, unknown_items: str) -> None:
    in_tmp(_mind(behaviors, news, unknown_items=unknown_items))


def _expected_mind_counts(rows: list[list[str]]) -> tuple[int, int]:
    """(events, history) rows in: one event per impression token (a line without any is one row,
    rejected), history tokens from each user's first line."""
    events = sum(len(row[4].strip().split(" ")) for row in rows)
    first: dict[str, list[str]] = {}
    for row in rows:
        first.setdefault(row[1] or "", row)
    history = sum(1 for row in first.values() for token in row[3].split(" ") if token.strip())
    return events, history


@FUZZ
@given(behaviors=tsv_lines(5, _behaviors_row(True), clean=True), news=tsv_lines(8, _news_row(True), clean=True),
       unknown_items=POLICY)
# a behaviors line with no impressions vanished without a reject (0 rows in, 0 rejected)
@example(behaviors=(b"1\tU1\t11/11/2019 9:05:58 AM\tN1\t\n", [["1", "U1", "11/11/2019 9:05:58 AM", "N1", ""]]),
         news=(NEWS, [[], []]), unknown_items="reject")
def test_mind_well_formed_files_import_and_every_row_is_counted(behaviors: tuple[bytes, list[list[str]]],
                                                                news: tuple[bytes, list[list[str]]],
                                                                unknown_items: str) -> None:
    manifest = in_tmp(_mind(behaviors[0], news[0], unknown_items=unknown_items), must_succeed=True)
    assert manifest is not None
    events, history = _expected_mind_counts(behaviors[1])
    assert manifest["rows_in"] == {"items": len(news[1]), "events": events, "history": history}


# --- MovieLens (a folder) -----------------------------------------------------------------------

ML_FILES = {
    "movies.csv": (MOVIE_FIELDS, ["movieId", "title", "genres"]),
    "ratings.csv": (RATING_FIELDS, ["userId", "movieId", "rating", "timestamp"]),
    "tags.csv": (TAG_FIELDS, ["userId", "movieId", "tag", "timestamp"]),
}


def _movielens(files: dict[str, bytes], **kw: Any) -> Callable[[Path], dict[str, Any]]:
    def run(out: Path) -> dict[str, Any]:
        folder = out.parent / "ml"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return import_movielens(folder, out, **kw)
    return run


@st.composite
def movielens_folder(draw: st.DrawFn, clean: bool) -> dict[str, tuple[bytes, int]]:
    files = {}
    for name, (fields, required) in ML_FILES.items():
        if clean:
            if name != "tags.csv" or draw(st.booleans()):
                files[name] = draw(header_csv(fields, required, clean=True))
        else:
            choice = draw(st.sampled_from(["plausible"] * 4 + ["anything", "absent"]))
            if choice == "plausible":
                files[name] = draw(header_csv(fields, required, clean=False))
            elif choice == "anything":
                files[name] = (draw(anything()), -1)
    return files


ML_MOVIES = b"movieId,title,genres\n1,Heat (1995),Action\n"
ML_RATINGS = b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"


@FUZZ
@given(files=movielens_folder(clean=False), with_tags=st.booleans(), click_threshold=st.sampled_from([4.0, 0.0]))
# a `tags` column in movies.csv collided with the aggregated tags (InvalidOperationError)
@example(files={"movies.csv": (b"movieId,title,genres,tags\n1,T,A,x\n", 1), "ratings.csv": (ML_RATINGS, 1),
                "tags.csv": (b"userId,movieId,tag,timestamp\n1,1,x,1\n", 1)}, with_tags=True, click_threshold=4.0)
# a broken quote in the last row, past columns the contract does not know (`line`, a second
# `userId`, `raw`): the parse check read only the known columns, the write then failed in polars
@example(files={"movies.csv": (b"movieId,title,genres,line\n", 0),
                "ratings.csv": (b"userId,movieId,rating,timestamp,line,userId,raw\n" + b"1,a,4.0,964982703,,1,\n" * 3
                                + b'1,a,4.0,964982703,,1,0"\n1,a,",964982703,,1,\n', 5),
                "tags.csv": (b"userId,movieId,tag,timestamp\n", 0)}, with_tags=False, click_threshold=4.0)
def test_movielens_any_files_give_a_dataset_or_a_clear_error(files: dict[str, tuple[bytes, int]], with_tags: bool,
                                                             click_threshold: float) -> None:
    in_tmp(_movielens({k: v[0] for k, v in files.items()}, with_tags=with_tags, click_threshold=click_threshold))


@FUZZ
@given(files=movielens_folder(clean=True))
# ratings "nan"/"inf" were accepted (nan counted as a click); now bad_clicked rejects
@example(files={"movies.csv": (ML_MOVIES, 1), "ratings.csv": (ML_RATINGS + b"1,1,nan,964982703\n1,1,inf,964982703\n", 3)})
def test_movielens_well_formed_files_import_and_every_row_is_counted(files: dict[str, tuple[bytes, int]]) -> None:
    manifest = in_tmp(_movielens({k: v[0] for k, v in files.items()}), must_succeed=True)
    assert manifest is not None
    assert manifest["rows_in"] == {"items": files["movies.csv"][1], "events": files["ratings.csv"][1]}


def test_movielens_non_finite_ratings_are_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.csv").write_bytes(ML_MOVIES)
    (folder / "ratings.csv").write_bytes(ML_RATINGS + b"1,1,nan,964982703\n1,1,inf,964982703\n")
    manifest = import_movielens(folder, tmp_path / "ds")
    assert manifest["rejects_by_reason"] == {"events/bad_clicked": 2}


def test_movielens_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecsysInputError, match="not a directory"):
        import_movielens(tmp_path / "nope", tmp_path / "ds")
