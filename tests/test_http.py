"""The HTTP layer without a model: offline API docs, clients that hang up, the demo page's shell.

A stand-in service carries only the settings: none of these requests reaches a ranking.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from serving.http import build_app
from serving.service import ServeSettings


@dataclass
class Standin:
    settings: ServeSettings

    def rank(self, req: object) -> object:
        raise AssertionError("a request that was never read must not be ranked")


def app_with(**settings: object):
    return build_app(lambda: Standin(ServeSettings(model="unused", **settings)))  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_every_asset_from_the_service_itself(page: str) -> None:
    client = TestClient(app_with())
    res = client.get(page)
    assert res.status_code == 200
    refs = re.findall(r'(?:src|href|spec-url)="([^"]+)"', res.text)
    assert refs and not [r for r in refs if "//" in r], refs  # nothing from a CDN (or any other host)
    assert "fonts.googleapis" not in res.text and "validator.swagger.io" not in res.text
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 1000, (ref, asset.status_code)
    scripts = re.findall(r'<script src="([^"]+)"', res.text)
    assert scripts and all(client.get(s).headers["content-type"].startswith(("text/javascript", "application/javascript"))
                           for s in scripts)


def disconnecting_request(path: str, headers: list[tuple[bytes, bytes]], gone: object = None) -> tuple[dict, object, object, list[dict]]:
    """An ASGI POST whose client sends half its body, then hangs up: `receive()` answers
    http.disconnect (uvicorn) or raises `gone` (a Ray Serve replica: the proxy cancels the read)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"200"), *headers],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    messages = [{"type": "http.request", "body": b'{"user_id": "u", "item', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        message = messages.pop(0) if messages else {"type": "http.disconnect"}
        if message["type"] == "http.disconnect" and gone is not None:
            raise gone  # type: ignore[misc]
        return message

    async def send(message: dict) -> None:
        sent.append(message)

    return scope, receive, send, sent


def ray_cancelled() -> BaseException:
    from ray.exceptions import TaskCancelledError

    return TaskCancelledError()


@pytest.mark.parametrize(("key", "gone"), [(None, None), ("s3cret", None), (None, "ray")], ids=["open", "with-key", "ray-serve"])
def test_a_client_that_hangs_up_mid_request_is_one_log_line_not_a_500(key: str | None, gone: str | None,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    app = app_with(api_key=key)
    headers = [(b"x-api-key", key.encode())] if key else []
    with caplog.at_level(logging.INFO):
        for path in ("/v1/rank", "/v1/feedback"):
            scope, receive, send, sent = disconnecting_request(path, headers, ray_cancelled() if gone else None)
            asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))  # raised before: No response returned
            assert not [m for m in sent if m.get("status", 0) >= 500], sent
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 2 and "/v1/rank" in lines[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], [r.getMessage() for r in caplog.records]


def test_a_real_socket_hung_up_mid_body_under_uvicorn_logs_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app_with(), host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    with caplog.at_level(logging.INFO):
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
            time.sleep(0.05)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 500\r\n\r\n{\"user_id\": \"u\"")
                time.sleep(0.2)
            while not any("disconnected" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
                time.sleep(0.05)
            time.sleep(0.3)  # anything the server would log after the app returned
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    assert not thread.is_alive()
    records = [r for r in caplog.records if r.name.startswith(("uvicorn", "serving"))]
    assert sum("disconnected" in r.getMessage() for r in records) == 1
    assert not [r for r in records if r.levelno >= logging.WARNING or r.exc_info], [r.getMessage() for r in records]


def test_demo_page_shows_a_loading_state_and_asks_for_no_favicon() -> None:
    client = TestClient(app_with())
    html = client.get("/").text
    grid = html[html.index('<main id="grid"'):html.index("</main>")]
    assert 'id="loading"' in grid and "Loading" in grid  # shown until the scripts have ranked something
    assert 'aria-busy="true"' in grid
    assert re.search(r'<link rel="icon" href="data:', html)  # an inline icon: no request for /favicon.ico
    assert client.get("/favicon.ico").status_code == 204  # and a client that asks anyway gets no 404
