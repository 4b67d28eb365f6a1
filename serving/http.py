"""FastAPI routes over a RankingService: the JSON API, its OpenAPI schema and the demo shop page.

Every client mistake is a 4xx whose body names the field (`detail[].loc`, and `message` in one
line); an unexpected failure is logged with its traceback and answered 500 without internals; a
client that hangs up before its request is read is one log line. A client over its rate limit
gets 429 and a full disk 503, both with Retry-After (serving/ratelimit.py, serving/eventlog.py). /docs and /redoc are served
from files shipped with the fastapi-offline package, so they work without a network.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from serving.api_models import FeedbackRequest, FeedbackResponse, Health, ModelInfo, RankRequest, RankResponse
from serving.eventlog import StorageFull
from serving.ratelimit import Limits, OverCapacity, RateLimited, RateLimiter
from serving.service import RankingService, RequestError

log = logging.getLogger(__name__)


def _disconnect_errors() -> tuple[type[BaseException], ...]:
    """What `receive()` raises when the client has gone: Starlette's ClientDisconnect and, in a Ray
    Serve replica, the cancelled fetch of the request's messages from the proxy."""
    try:
        from ray.exceptions import TaskCancelledError
    except ImportError:  # pragma: no cover - ray is a dependency; the app also runs without it
        return (ClientDisconnect,)
    return (ClientDisconnect, TaskCancelledError)


DISCONNECTS = _disconnect_errors()
PAGE = Path(__file__).resolve().parent / "static" / "index.html"


def _where(loc: list | tuple) -> str:
    return ".".join(str(p) for p in loc)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before the app sees
    it, whether it declares its length or streams it in chunks (read up to the limit, then
    handed on)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        body, more = b"", True
        while more:
            try:
                message = await receive()
            except DISCONNECTS:  # Ray Serve: the proxy cancelled the read when the client left
                return _went_away(scope)
            if message["type"] != "http.request":  # the client went away: one line, no response to send
                return _went_away(scope)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._refuse(send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps({"message": f"body: larger than {self.limit} bytes", "detail": [
            {"loc": ["body"], "msg": f"larger than {self.limit} bytes", "type": "too_large"}]}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def _went_away(scope: dict) -> None:
    log.info("client disconnected before the request was read: %s %s", scope.get("method", "?"), scope.get("path", "?"))


def _key_of(headers: Headers) -> str:
    auth = headers.get("authorization", "")
    return headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else "")


def _client_of(request: Request, keyed: bool) -> str:
    """Whom a per-key limit counts: the API key (checked by ApiKey), else the client's address. A
    key header is not trusted when no key is configured: a client could make up a new one per call."""
    if keyed:
        return _key_of(request.headers)
    return f"addr:{request.client.host if request.client else '?'}"


def limiter_for(settings: Any) -> RateLimiter:
    return RateLimiter(Limits(settings.rank_per_key, settings.rank_per_user, settings.feedback_per_key,
                              settings.feedback_per_user, settings.burst_seconds))


class ApiKey:
    """ASGI middleware: with a key set, every /v1/* call without it is answered 401. Plain ASGI
    rather than `@app.middleware("http")`, whose `call_next` turns a client that disconnects
    mid-request into `RuntimeError: No response returned`, a 500 and a traceback."""

    def __init__(self, app: Any, key: str | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (scope["type"] == "http" and self.key and scope.get("path", "").startswith("/v1/")
                and not hmac.compare_digest(_key_of(Headers(scope=scope)).encode(), self.key.encode())):
            response = JSONResponse(status_code=401, headers={"WWW-Authenticate": "Bearer"}, content={
                "message": "header: X-API-Key (or Authorization: Bearer) missing or wrong",
                "detail": [{"loc": ["header", "x-api-key"], "msg": "missing or wrong API key", "type": "auth"}]})
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _offline_docs_app(**kwargs: Any) -> FastAPI:
    """FastAPI with /docs and /redoc served from the Swagger UI and ReDoc files that the
    fastapi-offline wheel ships (no CDN: the pages work without a network)."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:  # not installed: the CDN pages, which need the network
        log.warning("fastapi-offline is not installed: /docs and /redoc load their scripts from a CDN")
        return FastAPI(**kwargs)
    return FastAPIOffline(**kwargs)


def build_app(get_service: Callable[[], RankingService],
              rank_batched: Callable[[RankRequest], Awaitable[RankResponse]] | None = None,
              limiter: RateLimiter | None = None) -> FastAPI:
    """The routes; `rank_batched` (Ray Serve's `@serve.batch` method) ranks concurrent requests
    together, otherwise each request is ranked on its own. `limiter`: default, the settings' limits."""
    app = _offline_docs_app(
        title="recsys ranking API",
        version="1",
        description="Rank candidate items for a user, with generated blurbs and reasons; record feedback.",
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would otherwise fetch a badge from the web
    )

    settings = get_service().settings
    limits = limiter or limiter_for(settings)
    keyed = bool(settings.api_key)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    # outside the body limit: a wrong key is refused before its body is read
    app.add_middleware(ApiKey, key=settings.api_key)

    @app.exception_handler(ClientDisconnect)
    async def went_away(request: Request, _: ClientDisconnect) -> Response:
        log.info("client disconnected before the request was read: %s %s", request.method, request.url.path)
        return Response(status_code=499)  # nobody reads it; nothing is logged as an error

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in err.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return JSONResponse(status_code=422, content={"message": f"{_where(first['loc'])}: {first['msg']}", "detail": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        # e.g. a body that is not UTF-8 at all (400), an unknown path (404), a wrong method (405)
        where = "body" if err.status_code == 400 else "path"
        return JSONResponse(
            status_code=err.status_code,
            headers=getattr(err, "headers", None),
            content={"message": f"{where}: {err.detail}", "detail": [{"loc": [where], "msg": str(err.detail), "type": "http"}]},
        )

    @app.exception_handler(RequestError)
    async def refused(_: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content={
            "message": f"{_where(err.loc)}: {err.message}", "detail": [{"loc": err.loc, "msg": err.message, "type": "limit"}],
        })

    @app.exception_handler(RateLimited)
    async def too_many(_: Request, err: RateLimited) -> JSONResponse:
        return JSONResponse(status_code=429, headers={"Retry-After": err.retry_after_header}, content={
            "message": f"{_where(err.loc)}: {err.message}", "detail": [{"loc": err.loc, "msg": err.message, "type": "rate_limit"}],
        })

    @app.exception_handler(OverCapacity)
    async def too_big(_: Request, err: OverCapacity) -> JSONResponse:
        return JSONResponse(status_code=422, content={
            "message": f"{_where(err.loc)}: {err.message}", "detail": [{"loc": err.loc, "msg": err.message, "type": "rate_limit"}],
        })

    @app.exception_handler(StorageFull)
    async def disk_full(_: Request, err: StorageFull) -> JSONResponse:
        # nothing of the call was kept (eventlog cuts a refused write back): safe to retry as is
        log.error("feedback refused: %s", err.strerror)
        return JSONResponse(status_code=503, headers={"Retry-After": str(settings.storage_retry_seconds)}, content={
            "message": "storage full: the feedback was not recorded; retry later",
            "detail": [{"loc": [], "msg": "storage full", "type": "unavailable"}]})

    @app.exception_handler(Exception)
    async def crashed(_: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(status_code=500, content={"message": "internal error; see the service log", "detail": []})

    if rank_batched is None:
        @app.post("/v1/rank", response_model=RankResponse, summary="Rank candidates for a user")
        def rank(req: RankRequest, request: Request) -> RankResponse:
            limits.rank(_client_of(request, keyed), req.user_id)
            return get_service().rank(req)
    else:
        @app.post("/v1/rank", response_model=RankResponse, summary="Rank candidates for a user")
        async def rank_in_batches(req: RankRequest, request: Request) -> RankResponse:
            limits.rank(_client_of(request, keyed), req.user_id)
            get_service().check(req)  # a bad request fails alone, before it joins a batch
            return await rank_batched(req)

    @app.post("/v1/feedback", response_model=FeedbackResponse, summary="Record impressions and clicks (durable)")
    def feedback(req: FeedbackRequest, request: Request) -> FeedbackResponse:
        limits.feedback(_client_of(request, keyed), [e.user_id for e in req.events])
        return get_service().feedback(req)

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return get_service().health()

    @app.get("/v1/model", response_model=list[ModelInfo], summary="The loaded model of each arm")
    def model() -> list[ModelInfo]:
        return get_service().model_info()

    @app.get("/v1/demo/users", summary="Active users to pick from (demo page)")
    def demo_users(limit: int = Query(12, ge=1, le=200)) -> list[dict]:
        return get_service().demo_users(limit)

    @app.get("/v1/demo/candidates", summary="A spread of catalog item ids (demo page)")
    def demo_candidates(limit: int = Query(60, ge=1, le=500)) -> list[str]:
        return get_service().demo_candidates(limit)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # the demo page carries its icon inline; a client that asks anyway gets no 404 in the log
        return Response(status_code=204)

    return app
