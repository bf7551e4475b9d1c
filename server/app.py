"""The ASGI app: POST /rpc, liveness and readiness probes, metrics, the OpenRPC document, the
explorer, CORS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from functools import cache
from typing import Any

import orjson
import psycopg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from server.auth import Authenticator
from server.db import Database
from server.errors import PayloadTooLarge, RPCError, UnsupportedMediaType
from server.explorer import explorer_routes
from server.keys import shared_secret
from server.metrics import Gauge, Metrics, ScrapeCollector, authorised
from server.openrpc import openrpc_document
from server.procedure import Router
from server.ratelimit import RateLimiter
from server.rpc import DISCOVER, Dispatcher, new_request_id
from server.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("nurturehub.server")

TITLE = "NurtureHub"
VERSION = "1.0.1"
_JSON = "application/json"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)


class RpcEndpoint:
    """POST /rpc as a plain ASGI app: read the body (within the limit), dispatch, reply.

    Written against ASGI rather than starlette's Request and Response: the endpoint needs three
    headers and one body, and the per-request objects cost a measurable share of a call (bench/).
    """

    def __init__(self, dispatcher: Dispatcher, settings: Settings) -> None:
        self.dispatcher = dispatcher
        limiter = dispatcher.limiter
        self.rate_limit_policy = limiter.policy_header.encode() if limiter is not None else b""
        self.limit = settings.max_body_bytes
        self.too_large = f"Payload too large: the body may be at most {self.limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])  # lower-cased names; the last of a repeated one wins
        request_id = new_request_id(_text(headers.get(b"x-request-id")))
        try:
            body = await self._read_body(headers, receive)
        except PayloadTooLarge as exc:
            reply = self.dispatcher.refuse(exc, request_id)
        except ClientDisconnect:
            return  # nobody is left to answer, and nothing was run
        else:
            reply = await self.dispatcher.handle(
                body, authorization=_text(headers.get(b"authorization")), request_id=request_id
            )
        status, body = (204, b"") if reply.body is None else (reply.status, reply.body)
        response_headers = [(b"x-request-id", request_id.encode())]
        if reply.retry_after is not None:
            response_headers.append((b"retry-after", str(reply.retry_after).encode()))
            if reply.policy is not None:
                # The IETF draft's fields (draft-ietf-httpapi-ratelimit-headers-11), on refusals
                # only: a success would need this minute's count from every process to say
                # what remains, which a process that leases in blocks does not know.
                response_headers += [
                    (b"ratelimit-policy", self.rate_limit_policy),
                    (b"ratelimit", f'"{reply.policy}";r=0;t={reply.retry_after}'.encode()),
                ]
        if status != 204:
            response_headers += [
                (b"content-type", _JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        """The request body, refused as soon as it passes the limit (declared or streamed)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise PayloadTooLarge(self.too_large)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(self.too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class BrowserRpcEndpoint:
    """POST /rpc for a request that carries an Origin (a browser): the body must be declared
    JSON. A form or text/plain post is a "simple" request that a browser sends cross-origin
    without a preflight; refused here, it runs nothing (tRPC #5522). Requests without an Origin
    never come this way (see _App), so scripts and the hot path pay nothing for it."""

    def __init__(self, rpc: RpcEndpoint) -> None:
        self.rpc = rpc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if content_type.split(b";", 1)[0].strip().lower() == _JSON.encode():
            await self.rpc(scope, receive, send)
            return
        request_id = new_request_id(_text(dict(scope["headers"]).get(b"x-request-id")))
        reply = self.rpc.dispatcher.refuse(UnsupportedMediaType(), request_id)
        body = reply.body or b""
        headers = [
            (b"x-request-id", request_id.encode()),
            (b"content-type", _JSON.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


class _App(Starlette):
    """Starlette, with a direct path for the one hot route.

    A POST to /rpc without an Origin header needs nothing from the middleware (CORS acts only
    on cross-origin requests) or the router, so it goes straight to the endpoint; every other
    request, and a cross-origin call, takes the full stack.
    """

    def __init__(self, rpc: RpcEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rpc = rpc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/rpc"
            and scope["method"] == "POST"
            and not any(name == b"origin" for name, _ in scope["headers"])
        ):
            await self._rpc(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# Routes beyond /rpc that the app serves (the CRM webhook receivers), built from the app's
# database and settings; loaded by import path, as the router is, so server/ imports neither.
ExtraRoutes = Callable[[Database, Settings], Sequence[BaseRoute]]


def create_app(
    settings: Settings,
    router: Router,
    *,
    database: Database | None = None,
    collectors: Sequence[ScrapeCollector] = (),
    extra_routes: ExtraRoutes | None = None,
) -> Starlette:
    """Build the app; `database` lets a caller share one engine (tests), else the app owns one.

    `collectors` add gauges measured at scrape time (queue depths) to GET /metrics, which is
    there only when settings.metrics_token is set; `extra_routes` adds routes beyond /rpc (the
    CRM webhook receivers).
    """
    db = database or Database(
        settings.database_url,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        pool_timeout=settings.pool_timeout,
    )

    @cache
    def discover() -> dict[str, Any]:
        return openrpc_document(router, title=TITLE, version=VERSION)

    authenticator = Authenticator(db, settings.database_url, cache_seconds=settings.auth_cache_seconds)
    metrics = Metrics([*router, DISCOVER], settings.metrics_dir) if settings.metrics_token else None
    limiter = RateLimiter(
        settings.database_url,
        per_token=settings.rate_limit_per_token,
        per_organisation=settings.rate_limit_per_organisation,
    )
    dispatcher = Dispatcher(
        router, db, settings, authenticator, discover=discover, metrics=metrics, limiter=limiter
    )

    rpc = RpcEndpoint(dispatcher, settings)

    async def livez(request: Request) -> Response:
        """Liveness: the process answers. Says nothing of the database (see readyz)."""
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Readiness: this process can serve calls now, its database answering."""
        if await db.ping():
            return _json({"status": "ready", "database": "ok"})
        return _json({"status": "unavailable", "database": "unreachable"}, status=503)

    async def openrpc_json(request: Request) -> Response:
        return _json(discover())

    def sample() -> None:
        """This process's gauges and slow-path counters, into its metrics for the scrape."""
        assert metrics is not None
        pool = db.pool
        for name, value in (
            ("nurturehub_db_pool_connections_in_use", pool.in_use),
            ("nurturehub_db_pool_connections_idle", pool.size - pool.in_use),
            ("nurturehub_db_pool_waiting", pool.waiting),
            ("nurturehub_db_pool_waits_total", pool.waits),
            ("nurturehub_db_pool_wait_seconds_total", pool.wait_seconds),
            ("nurturehub_db_pool_timeouts_total", pool.timeouts),
            ("nurturehub_auth_cache_hits_total", authenticator.hits),
            ("nurturehub_auth_cache_misses_total", authenticator.misses),
            ("nurturehub_auth_listener_up", authenticator.listening),
            ("nurturehub_shed_total", dispatcher.shed),
            ('nurturehub_rate_limited_total{scope="token"}', limiter.token.refused),
            ('nurturehub_rate_limited_total{scope="organisation"}', limiter.organisation.refused),
            ("nurturehub_rate_limit_fail_open_total", limiter.fail_open_calls),
            ("nurturehub_rate_limit_leases_total", limiter.leases),
            ("nurturehub_processes", 1),
        ):
            metrics.set(name, float(value))

    async def sample_forever() -> None:
        while True:
            sample()
            await asyncio.sleep(1.0)

    async def metrics_endpoint(request: Request) -> Response:
        assert metrics is not None and settings.metrics_token is not None
        if not authorised(settings.metrics_token, request.headers.get("authorization")):
            return Response("Unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})
        sample()
        scraped: list[Gauge] = []
        try:
            async with db.transaction(read_only=True, priority=True) as tx:
                for collect in collectors:
                    scraped += await collect(tx)
        except RPCError:
            pass  # the database is away: the process's own figures still answer
        return Response(metrics.render(scraped), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def share_cursor_key() -> None:
        # Without a suppression key, every process of the deployment signs list cursors with
        # one key from the database, so a cursor from one process works on another.
        if settings.suppression_key is not None:
            return
        try:
            secret = await shared_secret(db, "list-cursors")
        except (RPCError, psycopg.Error):
            log.warning("list cursors are signed with this process's own key: no shared key in the database")
            return
        dispatcher.settings = dataclasses.replace(dispatcher.settings, shared_cursor_secret=secret)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await share_cursor_key()
        authenticator.start()
        sampler = asyncio.create_task(sample_forever()) if metrics is not None else None
        # What exists now (modules, models, validators: nearly all of the heap) lives as long
        # as the process, so full collections stop walking it: time in the collector per
        # contacts.get call, about 30 us on average before, 6-7 us after (bench/gc_cost.py).
        gc.freeze()
        try:
            yield
        finally:
            if sampler is not None:
                sampler.cancel()
            await authenticator.stop()
            await limiter.close()
            if database is None:
                await db.close()

    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
            # A browser's script reads only the response headers named here.
            expose_headers=["X-Request-Id", "Retry-After", "RateLimit", "RateLimit-Policy"],
            # Chromium caps a preflight's cache at 7200 s (Firefox at 86400): one preflight per
            # origin and URL every two hours, instead of every ten minutes.
            max_age=7200,
        )
    ]
    routes: list[BaseRoute] = [
        Route("/rpc", BrowserRpcEndpoint(rpc), methods=["POST"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/healthz", livez, methods=["GET"]),  # the liveness probe's earlier name
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openrpc.json", openrpc_json, methods=["GET"]),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    if settings.explorer:
        routes += explorer_routes()
    if extra_routes is not None:
        routes += extra_routes(db, settings)
    app = _App(rpc, routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.db = db
    app.state.dispatcher = dispatcher
    return app
