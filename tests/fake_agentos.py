"""A fake agentOS on 127.0.0.1: person endpoints under /v4/{tier}/{shortName}/..., `offset` and
`count` (at most 1000) paging, no change filter, the `api_key` header. Its published limit
(hub.agentos.com, API throttle limits): 50 requests in any rolling minute per key, else 429 with
no Retry-After (wait 60 s); a key that keeps calling while limited is blocked (403) for good,
here after three such calls."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integrations.config import CrmConfig
from tests.support import free_port, serve_loopback

API_KEY = "agentos-test-key-0001"
SHORT_NAME = "acme"


class FakeAgentOs:
    def __init__(self, per_minute: int = 50, ban_after: int = 3) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {}  # endpoint path -> records
        self.per_minute = per_minute
        self.ban_after = ban_after
        self.calls: deque[float] = deque()
        self.limited_until = 0.0
        self.calls_while_limited = 0
        self.banned = False
        self.too_many = 0
        self.requests: list[tuple[str, int, int]] = []  # (path, offset, count)
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/v4/{tier}/{short}/{path:path}", self._list, methods=["GET"])])
        self._server, self._thread = serve_loopback(app, self.port, "fake agentOS")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def config(self, **overrides: Any) -> CrmConfig:
        return CrmConfig(agentos_api_url=self.url, crm_timeout=2.0, **overrides)

    def _admit(self) -> Response | None:
        with self._lock:
            now = time.monotonic()
            if self.banned:
                return Response(status_code=403)
            if now < self.limited_until:
                self.calls_while_limited += 1
                if self.calls_while_limited >= self.ban_after:
                    self.banned = True
                    return Response(status_code=403)
                self.too_many += 1
                return Response(status_code=429)
            while self.calls and now - self.calls[0] >= 60:
                self.calls.popleft()
            if len(self.calls) >= self.per_minute:
                self.limited_until = now + 60
                self.too_many += 1
                return Response(status_code=429)
            self.calls.append(now)
            return None

    async def _list(self, request: Request) -> Response:
        if request.headers.get("api_key") != API_KEY or "api_key" in request.query_params:
            return Response(status_code=401)
        refused = self._admit()
        if refused is not None:
            return refused
        if request.path_params["short"] != SHORT_NAME:
            return Response(status_code=404)
        path = request.path_params["path"]
        offset = int(request.query_params.get("offset", 0))
        count = int(request.query_params.get("count", 100))
        if count > 1000:
            return Response(b'{"Message": "count is at most 1000"}', status_code=400)
        self.requests.append((path, offset, count))
        with self._lock:
            rows = list(self.records.get(path, []))
        body = {"Data": rows[offset : offset + count], "TotalCount": len(rows)}
        return Response(orjson.dumps(body), media_type="application/json")
