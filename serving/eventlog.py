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
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
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


class JsonlLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self.unreadable = 0
        self.dropped = 0  # rows of best-effort appends refused by a full disk

    encode = staticmethod(encode)  # rows -> lines; the served-features log encodes with orjson (serving/service.py)

    def append(self, rows: list[dict[str, Any]], durable: bool = True) -> int:
        """Write rows as one block; returns the file size after the write. `durable`: fsynced
        before returning, and a full disk raises StorageFull; otherwise (the served-features log)
        best effort: a full disk drops the rows with a warning, ranking goes on."""
        fd = open_locked(self.path)
        try:
            return self._write(fd, self.encode(rows), durable)
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
        return self.read_from(0)[0]


def segment_of(path: Path) -> str | None:
    """The id in a file's header line (a file a compaction started), None for a file without one."""
    with open(path, "rb") as f:
        first = f.readline()
    try:
        header = json.loads(first)
    except ValueError:
        return None
    return header.get(SEGMENT_KEY) if isinstance(header, dict) else None
