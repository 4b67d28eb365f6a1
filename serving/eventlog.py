"""Append-only JSON-lines logs: the durable feedback log and the served-features log.

Every replica of the service appends to and tails the same file, so the file is the shared truth:
feedback written by one replica is seen by the others on their next request, and by a restarted
service. An append is one `write` of whole lines under an exclusive `flock`, fsynced before the
call returns when `durable` (the feedback endpoint answers 2xx only after that). A crash mid-write
can leave a torn last line; the next append first ends it with a newline, and readers count such
lines as unreadable instead of failing.

A full disk (ENOSPC, EDQUOT) is `StorageFull`: the file is cut back to its size before the write,
so a refused block leaves no half of itself for a reader to count, and the next append simply
tries again (the service recovers by itself when space returns). A compaction (serving/online.py)
replaces the file by a new one under the same lock; an appender that opened the old one sees that
after it gets the lock and reopens, so no write lands in a file nobody reads.

Rotation by size (the served-features log): when an append leaves the file at `rotate_bytes` or
more, the appender, still holding the lock, renames it to `<stem>.<n><suffix>` (n one more than the
newest rotated file: served.000001.jsonl, ...), starts an empty current file and deletes the
rotated files older than the newest `keep`. Every written line is in exactly one file: the rename
keeps the file whole, and an appender waiting on the old file reopens (as after a compaction).
`read_all` opens every file under the lock, so a rotation meanwhile neither hides nor repeats a
line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FULL = (errno.ENOSPC, errno.EDQUOT)
SEGMENT_KEY = "_segment"  # a header line {"_segment": id} starts every file a compaction created


class StorageFull(OSError):
    """The disk (or quota) is full: nothing of the refused rows was kept."""


def encode(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows).encode()


def open_locked(path: Path) -> int:
    """An fd of the file now at `path`, holding its exclusive lock. If a compaction replaced the
    file while we waited for the lock, the fd is of the old one: reopen until they agree."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _numbered(path: Path) -> list[tuple[int, Path]]:
    pattern = re.compile(rf"{re.escape(path.stem)}\.(\d+){re.escape(path.suffix)}")
    return sorted((int(m.group(1)), p) for p in path.parent.glob(f"{path.stem}.*{path.suffix}") if (m := pattern.fullmatch(p.name)))


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of the log at `path`, oldest first."""
    return [p for _, p in _numbered(Path(path))]


class JsonlLog:
    def __init__(self, path: Path, rotate_bytes: int = 0, keep: int = 8) -> None:
        """`rotate_bytes`: rotate the file once an append leaves it this big (0: never), keeping
        the newest `keep` rotated files."""
        if keep < 1:
            raise ValueError(f"keep={keep}: a rotated log keeps at least one rotated file")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self.rotate_bytes, self.keep = rotate_bytes, keep
        self.unreadable = 0
        self.dropped = 0  # rows of best-effort appends refused by a full disk
        self.rotations = 0

    encode = staticmethod(encode)  # rows -> lines; the served-features log encodes with orjson (serving/service.py)

    def append(self, rows: list[dict[str, Any]], durable: bool = True) -> int:
        """Write rows as one block; returns the file size after the write. `durable`: fsynced
        before returning, and a full disk raises StorageFull; otherwise (the served-features log)
        best effort: a full disk drops the rows with a warning, ranking goes on."""
        fd = open_locked(self.path)
        try:
            size = self._write(fd, self.encode(rows), durable)
            if self.rotate_bytes and size >= self.rotate_bytes:
                self._rotate()
            return size
        except OSError as err:
            if err.errno not in FULL:
                raise
            if durable:
                raise StorageFull(err.errno, f"{self.path}: {os.strerror(err.errno)}; nothing of this write was kept") from err
            self.dropped += len(rows)
            log.warning("%s: %s; %d row(s) not logged (%d so far)", self.path, os.strerror(err.errno), len(rows), self.dropped)
            return os.fstat(fd).st_size
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _rotate(self) -> None:
        """Under the current file's lock: it becomes the newest rotated file, an empty one takes
        its place, rotated files past `keep` go. A failure (a full disk) leaves the current file
        growing, and the next append tries again; the rows are written either way."""
        try:
            numbered = _numbered(self.path)
            older, n = [p for _, p in numbered], numbered[-1][0] + 1 if numbered else 1
            target = self.path.with_name(f"{self.path.stem}.{n:06d}{self.path.suffix}")
            os.rename(self.path, target)
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))  # readers find a current file
            self.rotations += 1
            for old in (older + [target])[:-self.keep]:
                old.unlink(missing_ok=True)
        except OSError as err:
            log.warning("%s: rotating failed (%s); the file keeps growing until the next append retries", self.path, err)

    @staticmethod
    def _write(fd: int, data: bytes, durable: bool) -> int:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn line from a crash: close it, never glue to it
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        except OSError:
            # cut back whatever part got written (truncating frees space, so it works on a full
            # disk): a reader must never count rows whose write was refused
            os.ftruncate(fd, size)
            raise
        return os.fstat(fd).st_size

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Complete lines from byte `offset` on; returns them and the offset after the last one."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read()
        return self.parse(data, offset)

    def parse(self, data: bytes, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The rows of the complete lines in `data` (read at byte `offset`), header lines left out."""
        end = data.rfind(b"\n") + 1
        rows = []
        for n, line in enumerate(data[:end].splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                self.unreadable += 1
                log.warning("%s: unreadable line %d after byte %d (a write torn by a crash?); skipped", self.path, n, offset)
            elif SEGMENT_KEY not in row:
                rows.append(row)
        return rows, offset + end

    def read_all(self) -> list[dict[str, Any]]:
        """Every row in write order: the rotated files' (oldest first), then the current file's.
        The files are opened under the lock (no rotation between the openings), then read."""
        fd = open_locked(self.path)
        try:
            files = [open(p, "rb") for p in rotated_files(self.path)] + [open(self.path, "rb")]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        rows: list[dict[str, Any]] = []
        for f in files:
            with f:
                rows += self.parse(f.read())[0]
        return rows


def segment_of(path: Path) -> str | None:
    """The id in a file's header line (a file a compaction started), None for a file without one."""
    with open(path, "rb") as f:
        first = f.readline()
    try:
        header = json.loads(first)
    except ValueError:
        return None
    return header.get(SEGMENT_KEY) if isinstance(header, dict) else None
