"""A dataset directory: the validated tables plus manifest.json saying how they were made."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys.core.errors import RecsysInputError
from recsys.core.schemas import (
    EVENTS_SCHEMA,
    HISTORY_SCHEMA,
    ITEMS_SCHEMA,
    REJECTS_SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    check_schema,
    conform,
)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Dataset:
    path: Path
    items: pl.DataFrame
    events: pl.DataFrame
    manifest: dict[str, Any]
    history: pl.DataFrame | None = None
    ground_truth: pl.DataFrame | None = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_dataset(
    out: Path,
    *,
    items: pl.DataFrame,
    events: pl.LazyFrame | pl.DataFrame,
    rejects: list[pl.LazyFrame],
    rows_in: dict[str, int],
    source: dict[str, Any],
    history: pl.LazyFrame | pl.DataFrame | None = None,
    ground_truth: pl.DataFrame | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the tables and manifest.json into `out`; return the manifest.

    `rows_in` counts the source rows per rejects source name ("items", "events", "history"); the
    manifest proves rows in = rows accepted + rows rejected for each, and a mismatch is a bug.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    conform(items, ITEMS_SCHEMA).sort("item_id").write_parquet(out / "items.parquet")  # type: ignore[union-attr]
    conform(events.lazy(), EVENTS_SCHEMA).sink_parquet(out / "events.parquet")  # type: ignore[union-attr]
    all_rejects = pl.concat([r.collect() for r in rejects]) if rejects else REJECTS_SCHEMA.to_frame()
    conform(all_rejects, REJECTS_SCHEMA).sort("source", "line").write_parquet(out / "rejects.parquet")  # type: ignore[union-attr]
    if history is not None:
        conform(history.lazy(), HISTORY_SCHEMA).sink_parquet(out / "history.parquet")  # type: ignore[union-attr]
    if ground_truth is not None:
        ground_truth.write_parquet(out / "ground_truth.parquet")
    manifest = build_manifest(out, rows_in=rows_in, source=source, extra=extra or {})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def build_manifest(out: Path, *, rows_in: dict[str, int], source: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    events = pl.scan_parquet(out / "events.parquet")
    stats = events.select(
        n=pl.len(),
        clicks=pl.col("clicked").cast(pl.Int64).sum(),
        users=pl.col("user_id").n_unique(),
        requests=pl.col("request_id").n_unique(),
        ts_min=pl.col("ts").min(),
        ts_max=pl.col("ts").max(),
    ).collect().row(0, named=True)
    rejects = pl.read_parquet(out / "rejects.parquet")
    by_reason = rejects.group_by("source", "reason").len().sort("source", "reason")
    rows = {name: pl.scan_parquet(out / f"{name}.parquet").select(pl.len()).collect().item()
            for name in TABLES if (out / f"{name}.parquet").exists()}
    rejected = dict(rejects.group_by("source").len().iter_rows())
    accepted_by_source = {"items": rows["items"] - extra.get("placeholder_items", 0),
                          "events": rows["events"], "history": rows.get("history", 0)}
    for name, n_in in rows_in.items():
        if n_in != accepted_by_source[name] + rejected.get(name, 0):
            raise AssertionError(
                f"bug: {name}: {n_in} rows in but {accepted_by_source[name]} accepted + "
                f"{rejected.get(name, 0)} rejected"
            )
    files = sorted(p.name for p in out.glob("*.parquet"))
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "rows_in": rows_in,
        "rows": rows,
        "rejects_by_reason": {f"{s}/{r}": n for s, r, n in by_reason.iter_rows()},
        "users": stats["users"],
        "requests": stats["requests"],
        "clicks": stats["clicks"] or 0,
        "time_range": {
            "min": stats["ts_min"].isoformat() if stats["ts_min"] else None,
            "max": stats["ts_max"].isoformat() if stats["ts_max"] else None,
        },
        "files": {name: file_sha256(out / name) for name in files},
        **extra,
    }


def content_hash(manifest: dict[str, Any]) -> str:
    """One hash of the dataset's content, for run provenance and stage caching."""
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()[:16]


def load_dataset(path: Path) -> Dataset:
    """Read a dataset directory, checking every table against its schema."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise RecsysInputError(
            f"{path} is not a dataset directory (no {MANIFEST}); create one with "
            "`recsys data synth` or `recsys data import`"
        )
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise RecsysInputError(
            f"{path}/{MANIFEST}: schema_version {manifest.get('schema_version')}, expected "
            f"{SCHEMA_VERSION}; re-import the data"
        )
    tables: dict[str, pl.DataFrame | None] = {}
    for name, schema in TABLES.items():
        file = path / f"{name}.parquet"
        if not file.exists():
            if name in ("items", "events", "rejects"):
                raise RecsysInputError(f"{path}: missing {file.name}")
            tables[name] = None
            continue
        frame = pl.read_parquet(file)
        problems = check_schema(frame, schema, file.name)
        if problems:
            raise RecsysInputError("; ".join(problems))
        tables[name] = frame
    return Dataset(
        path=path,
        items=tables["items"],  # type: ignore[arg-type]
        events=tables["events"],  # type: ignore[arg-type]
        manifest=manifest,
        history=tables["history"],
        ground_truth=tables["ground_truth"],
    )


def validate_dataset(path: Path) -> list[str]:
    """Every problem found in a dataset directory (empty list = valid)."""
    try:
        data = load_dataset(path)
    except RecsysInputError as err:
        return [str(err)]
    problems: list[str] = []
    for name, digest in data.manifest.get("files", {}).items():
        file = Path(path) / name
        if not file.exists():
            problems.append(f"{name}: listed in the manifest but missing")
        elif file_sha256(file) != digest:
            problems.append(f"{name}: content hash differs from the manifest (file changed after import)")
    ev, items = data.events, data.items
    for column in ("request_id", "user_id", "item_id", "ts", "clicked"):
        nulls = ev[column].null_count()
        if nulls:
            problems.append(f"events.parquet: {nulls} null value(s) in '{column}'")
    bad_clicks = ev.filter(~pl.col("clicked").is_in([0, 1])).height
    if bad_clicks:
        problems.append(f"events.parquet: {bad_clicks} row(s) with clicked not 0/1")
    dup_items = items.height - items["item_id"].n_unique()
    if dup_items:
        problems.append(f"items.parquet: {dup_items} duplicate item_id(s)")
    unknown = ev.join(items.select("item_id"), on="item_id", how="anti").height
    if unknown:
        problems.append(f"events.parquet: {unknown} event(s) reference items missing from items.parquet")
    for table, expected in data.manifest.get("rows", {}).items():
        actual = pl.scan_parquet(Path(path) / f"{table}.parquet").select(pl.len()).collect().item()
        if actual != expected:
            problems.append(f"{table}.parquet: {actual} rows, manifest says {expected}")
    return problems
