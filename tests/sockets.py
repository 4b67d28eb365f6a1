"""Ports for tests: a free one, and who listens on one."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners(port: int) -> dict[int, str]:
    """pid -> name of the processes listening on `port` (HAProxy reloads by starting a new process
    and ending the old one, so one may end while this looks)."""
    import psutil

    out = {}
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid:
            try:
                out[c.pid] = psutil.Process(c.pid).name()
            except psutil.NoSuchProcess:
                continue
    return out
