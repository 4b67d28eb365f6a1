from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from recsys.core.dataset import load_dataset, validate_dataset
from recsys.core.errors import RecsysInputError
from recsys.data.importers.events import import_events
from tests.conftest import write_text

ITEMS = """item_id,title,text
i1,Blue mug,"A blue mug, ceramic, 350 ml"
i2,Red shoe,
i1,Blue mug,A different text for the same id
i3,Lamp,Bright
,No id,x
i3,Lamp,Bright
i4,Long,{long}
"""

EVENTS = """user_id,item_id,timestamp,clicked
u1,i1,2024-01-01T10:00:00Z,1
u1,i2,2024-01-01T10:00:05+00:00,0
u2,i1,2024-01-01 10:00:00,x
u2,,2024-01-01T10:00:00.123Z,1
u3,i3,not-a-time,1
u3,i9,2024-01-02T00:00:00Z,0
 ,i3,2024-01-02T00:00:00Z,0
u3,i3,2024-01-02,1
u1,i3,2024-01-01T12:00:00Z,0
"""


@pytest.fixture
def contract_files(tmp_path: Path) -> tuple[Path, Path]:
    items = write_text(tmp_path / "items.csv", ITEMS.format(long="z" * 300))
    events = write_text(tmp_path / "events.csv", EVENTS)
    return events, items


def test_every_bad_row_is_rejected_with_reason_and_line(contract_files: tuple[Path, Path], tmp_path: Path) -> None:
    events, items = contract_files
    manifest = import_events(events, items, tmp_path / "ds", max_text_chars=200)
    rejects = pl.read_parquet(tmp_path / "ds" / "rejects.parquet")
    got = {(r["source"], r["line"], r["reason"], r["field"]) for r in rejects.iter_rows(named=True)}
    assert got == {
        ("items", 4, "duplicate_item_conflict", "item_id"),
        ("items", 6, "missing_item_id", "item_id"),
        ("items", 7, "duplicate_item", "item_id"),
        ("items", 8, "text_too_long", "text"),
        ("events", 4, "bad_clicked", "clicked"),
        ("events", 5, "missing_item_id", "item_id"),
        ("events", 6, "bad_timestamp", "timestamp"),
        ("events", 7, "unknown_item", "item_id"),
        ("events", 8, "missing_user_id", "user_id"),
    }
    assert manifest["rows_in"] == {"items": 7, "events": 9}
    assert manifest["rows"]["items"] + 4 == 7 and manifest["rows"]["events"] + 5 == 9
    # the raw row survives in the reject, so nothing is lost
    raw = rejects.filter(pl.col("reason") == "bad_clicked")["raw"].item()
    assert '"clicked":"x"' in raw
    assert validate_dataset(tmp_path / "ds") == []


def test_accepted_rows_are_typed_and_requests_follow_session_gaps(contract_files: tuple[Path, Path], tmp_path: Path) -> None:
    events, items = contract_files
    import_events(events, items, tmp_path / "ds", max_text_chars=200)
    data = load_dataset(tmp_path / "ds")
    ev = data.events
    assert ev.schema["ts"] == pl.Datetime("us", "UTC")
    assert ev["clicked"].to_list() == [1, 0, 0, 1]
    u1 = ev.filter(pl.col("user_id") == "u1")
    # two rows 5 s apart share a request; the row two hours later starts a new one
    assert u1["request_id"].to_list() == ["u1#0", "u1#0", "u1#1"]
    assert data.items.filter(pl.col("item_id") == "i1")["text"].item() == "A blue mug, ceramic, 350 ml"


def test_placeholder_policy_keeps_events_for_unknown_items(contract_files: tuple[Path, Path], tmp_path: Path) -> None:
    events, items = contract_files
    manifest = import_events(events, items, tmp_path / "ds", unknown_items="placeholder", max_text_chars=200)
    data = load_dataset(tmp_path / "ds")
    assert "i9" in data.events["item_id"].to_list()
    assert data.items.filter(pl.col("item_id") == "i9")["attributes"].item() == '{"placeholder": "true"}'
    assert manifest["placeholder_items"] == 1
    assert "events/unknown_item" not in manifest["rejects_by_reason"]


def test_request_id_and_position_columns_are_used_when_given(tmp_path: Path) -> None:
    items = write_text(tmp_path / "items.csv", "item_id,title,text\na,A,x\nb,B,y\n")
    events = write_text(
        tmp_path / "events.csv",
        "request_id,user_id,item_id,timestamp,clicked,position,rating\n"
        "r1,u,a,2024-03-01T00:00:00Z,1,1,4.5\nr1,u,b,2024-03-01T00:00:00Z,0,2,\n",
    )
    import_events(events, items, tmp_path / "ds")
    ev = load_dataset(tmp_path / "ds").events.sort("position")
    assert ev["request_id"].to_list() == ["r1", "r1"]
    assert ev["position"].to_list() == [1, 2]
    assert ev["rating"].to_list() == [4.5, None]


def test_parquet_inputs_are_accepted(tmp_path: Path) -> None:
    pl.DataFrame({"item_id": ["a"], "title": ["A"], "text": ["t"]}).write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": ["2024-01-01T00:00:00Z"], "clicked": [1]}).write_parquet(
        tmp_path / "events.parquet"
    )
    manifest = import_events(tmp_path / "events.parquet", tmp_path / "items.parquet", tmp_path / "ds")
    assert manifest["rows"]["events"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("user_id,item_id,when,clicked\nu,a,2024-01-01,1\n", "lacks column(s) ['timestamp']"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "not a text CSV"),
    ],
)
def test_wrong_files_are_one_clear_error(tmp_path: Path, content: str | bytes, message: str) -> None:
    items = write_text(tmp_path / "items.csv", "item_id,title,text\na,A,x\n")
    events = tmp_path / "events.csv"
    events.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(RecsysInputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        import_events(events, items, tmp_path / "ds")


def _log_of(rows: int) -> bytes:
    lines = [f"u{n % 7},i{1 + n % 3},2024-01-01T10:{n // 60 % 60:02d}:{n % 60:02d}Z,{n % 2}\n" for n in range(rows)]
    return ("user_id,item_id,timestamp,clicked\n" + "".join(lines)).encode()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(b"\x00", "nul_byte"), (b"\xff", "invalid_utf8"), (b"\x1b", "control_character"), (b"\x00\x00\xfe\x07", "nul_byte")],
)
def test_one_damaged_row_rejects_that_row_not_the_file(tmp_path: Path, damage: bytes, reason: str) -> None:
    """A 300-row log with one bad byte in row 150: 299 rows import, the damaged one is kept aside
    with its reason, the column and its line (issue 20: one NUL used to refuse the whole file)."""
    items = write_text(tmp_path / "items.csv", "item_id,title,text\ni1,A,x\ni2,B,y\ni3,C,z\n")
    data = _log_of(300).splitlines(keepends=True)
    data[150] = data[150].replace(b",i", b",i" + damage, 1)  # inside the item id of data row 150 (line 151)
    events = tmp_path / "events.csv"
    events.write_bytes(b"".join(data))
    manifest = import_events(events, items, tmp_path / "ds")
    assert manifest["rows_in"]["events"] == 300
    assert manifest["rows"]["events"] == 299
    assert manifest["rejects_by_reason"] == {f"events/{reason}": 1}
    rejects = pl.read_parquet(tmp_path / "ds" / "rejects.parquet")
    assert rejects.select("line", "reason", "field").row(0) == (151, reason, "item_id")
    assert validate_dataset(tmp_path / "ds") == []


def test_a_damaged_item_row_does_not_make_its_good_twin_a_duplicate(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    items.write_bytes(b"item_id,title,text\ni1,A\x00,x\ni1,A,x\n")
    events = tmp_path / "events.csv"
    events.write_bytes(b"user_id,item_id,timestamp,clicked\nu,i1,2024-01-01,1\n")
    manifest = import_events(events, items, tmp_path / "ds")
    assert manifest["rejects_by_reason"] == {"items/nul_byte": 1}
    assert manifest["rows"] == {**manifest["rows"], "items": 1, "events": 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 40, "not a text CSV/TSV file (binary content:"),
        ("user_id,item_id,timestamp,clicked\n".encode("utf-16"), "is UTF-16 text"),
        ("user_id,item_id,timestamp,clicked\n".encode() + "u,caf\xe9,2024-01-01,1\n".encode("latin-1") * 50, "not UTF-8 text"),
    ],
)
def test_a_file_that_mostly_is_binary_or_another_encoding_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    items = write_text(tmp_path / "items.csv", "item_id,title,text\na,A,x\n")
    events = tmp_path / "events.csv"
    events.write_bytes(content)
    with pytest.raises(RecsysInputError, match=re.escape(message)):
        import_events(events, items, tmp_path / "ds")
