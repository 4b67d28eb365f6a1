"""The HAProxy ingress's housekeeping (serving/deploy.py): the side ports a second Serve on one
machine needs, and a HAProxy a killed Ray left on the service's port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from serving.deploy import HAPROXY_SIDE_PORTS, haproxy_binary, haproxy_side_ports, reclaim_port
from tests.sockets import free_port, listeners
from tests.waiting import wait_until


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


def haproxy_config(directory: Path, port: int) -> Path:
    """A minimal HAProxy config where Ray Serve writes its own (a `haproxy-serve` folder)."""
    config = directory / "haproxy-serve" / str(port) / "haproxy.cfg"
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
    return config


# a parent that names itself as Ray names its workers ("ray::<actor>", 15 bytes at most), then runs argv
AS_RAY_WORKER = ("import ctypes, subprocess, sys; ctypes.CDLL(None).prctl(15, b'ray::HAProxyMan', 0, 0, 0); "
                 "sys.exit(subprocess.call(sys.argv[1:]))")


def test_an_orphaned_serve_haproxy_on_the_port_is_stopped_and_nothing_else(tmp_path: Path) -> None:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("no HAProxy binary (ray[serve] installs one on Linux)")
    orphaned, managed, other = free_port(), free_port(), free_port()
    started = [
        subprocess.Popen([binary, "-db", "-f", str(haproxy_config(tmp_path, orphaned))], stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-c", AS_RAY_WORKER, binary, "-db", "-f", str(haproxy_config(tmp_path, managed))],
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-c", f"import socket, time; s = socket.create_server(('127.0.0.1', {other})); "
                          "time.sleep(60)"]),
    ]
    try:
        for port in (orphaned, managed, other):
            wait_until(lambda port=port: bool(listeners(port)), seconds=10, what=f"a listener on {port}")
        for port in (orphaned, managed, other):
            reclaim_port(port)
        assert started[0].wait(timeout=10) is not None and not listeners(orphaned)  # its parent is no Ray process
        assert listeners(managed) and listeners(other)  # a live Serve's HAProxy, someone else's server
    finally:
        for proc in started:
            for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
                child.kill()
            proc.kill()
