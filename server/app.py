"""The ASGI app: POST /rpc, health and readiness probes, the OpenRPC document, CORS."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.auth import Authenticator
from server.db import Database
from server.errors import PayloadTooLarge
from server.openrpc import openrpc_document
from server.procedure import Router
from server.rpc import Dispatcher, new_request_id
from server.settings import Settings

__all__ = ["create_app"]

TITLE = "NurtureHub"
VERSION = "1.0.1"
_JSON = "application/json"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Payload too large: the body may be at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Payload too large: the body may be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings, router: Router, *, database: Database | None = None) -> Starlette:
    """Build the app; `database` lets a caller share one engine (tests), else the app owns one."""
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
    dispatcher = Dispatcher(router, db, settings, authenticator, discover=discover)

    async def rpc(request: Request) -> Response:
        request_id = new_request_id(request.headers.get("x-request-id"))
        headers = {"X-Request-Id": request_id}
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except PayloadTooLarge as exc:
            reply = dispatcher.refuse(exc, request_id)
        else:
            reply = await dispatcher.handle(
                body, authorization=request.headers.get("authorization"), request_id=request_id
            )
        if reply.body is None:
            return Response(status_code=204, headers=headers)
        return Response(reply.body, status_code=reply.status, media_type=_JSON, headers=headers)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await db.ping():
            return _json({"status": "ready", "database": "ok"})
        return _json({"status": "unavailable", "database": "unreachable"}, status=503)

    async def openrpc_json(request: Request) -> Response:
        return _json(discover())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        authenticator.start()
        try:
            yield
        finally:
            await authenticator.stop()
            if database is None:
                await db.close()

    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
            expose_headers=["X-Request-Id"],
            max_age=600,
        )
    ]
    routes = [
        Route("/rpc", rpc, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openrpc.json", openrpc_json, methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.db = db
    app.state.dispatcher = dispatcher
    return app
