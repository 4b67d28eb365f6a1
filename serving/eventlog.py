"""Append-only JSON-lines logs: the durable feedback log and the served-features log.

Every replica of the service appends to and tails the same file, so the file is the shared truth:
feedback written by one replica is seen by the others on their next request, and by a restarted
service. An append is one `write` of whole lines under an exclusive `flock`, fsynced before the
call returns when `durable` (the feedback endpoint answers 2xx only after that). A crash mid-write
can leave a torn last line; the next append first ends it with a newline, and readers count such
lines as unreadable instead of failing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self.unreadable = 0

    def append(self, rows: list[dict[str, Any]], durable: bool = True) -> int:
        """Write rows as one block; returns the file size after the write."""
        data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows).encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a torn line from a crash: close it, never glue to it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Complete lines from byte `offset` on; returns them and the offset after the last one."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        rows = []
        for n, line in enumerate(data[:end].splitlines()):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                self.unreadable += 1
                log.warning("%s: unreadable line %d after byte %d (a write torn by a crash?); skipped", self.path, n, offset)
        return rows, offset + end

    def read_all(self) -> list[dict[str, Any]]:
        return self.read_from(0)[0]
