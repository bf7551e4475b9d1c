"""A fake CRM on 127.0.0.1 speaking just enough Reapit, Alto and Street for the writeback tests.

Writes answer from a script of behaviours, consumed in order, then `default`:
`"ok"` (the provider's 201), an HTTP status (`500`, or `(429, {"Retry-After": "1"})`), or
`("hang", seconds)`, or `("trickle", seconds)` (201 at once, then its body a byte every
`seconds`, ten bytes), or `"malformed"` (201 with a body that is not JSON). `per_provider`
gives a provider its own default. Reads (GET) answer 200
unless given statuses (`script_reads`). Every request is recorded; token requests and reads are
kept apart.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from integrations.config import CrmConfig
from tests.support import free_port, serve_loopback

Behaviour = Any


@dataclass
class Seen:
    provider: str
    path: str
    url: str
    headers: dict[str, str]
    body: Any
    at: float
    contact: str | None
    text: str | None


@dataclass
class FakeCrm:
    default: Behaviour = "ok"
    delay: float = 0.0  # added to every write, so deliveries overlap
    requests: list[Seen] = field(default_factory=list)
    token_requests: list[Seen] = field(default_factory=list)
    overlaps: int = 0  # writes for a contact that arrived while another was in flight for it
    reads: list[Seen] = field(default_factory=list)  # GETs: crm.testConnection's checks
    per_provider: dict[str, Behaviour] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._script: list[Behaviour] = []
        self._read_script: list[int] = []  # statuses for the next reads; then 200
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = defaultdict(int)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[
                Route("/{provider}/token", self._token, methods=["POST"]),
                Route("/{provider}/{path:path}", self._write, methods=["POST"]),
                Route("/{provider}/{path:path}", self._read, methods=["GET"]),
            ]
        )
        self._server, self._thread = serve_loopback(app, self.port, "fake CRM")

    def config(self, **overrides: Any) -> CrmConfig:
        values: dict[str, Any] = {
            "reapit_api_url": f"{self.url}/reapit",
            "reapit_token_url": f"{self.url}/reapit/token",
            "alto_api_url": f"{self.url}/alto",
            "alto_token_url": f"{self.url}/alto/token",
            "street_api_url": f"{self.url}/street",
            "reapit_client_id": "platform-client",
            "reapit_client_secret": "platform-secret",
            "alto_client_id": "platform-client",
            "alto_client_secret": "platform-secret",
            "crm_timeout": 2.0,
            "writeback_backoff_base": 0.02,
            "writeback_poll_interval": 0.05,
            "writeback_grace_seconds": 2.0,
        }
        values.update(overrides)
        return CrmConfig(**values)

    def env(self, **overrides: str) -> dict[str, str]:
        """The same configuration as environment variables, for a worker subprocess."""
        config = self.config()
        names = (
            "reapit_api_url",
            "reapit_token_url",
            "alto_api_url",
            "alto_token_url",
            "street_api_url",
            "reapit_client_id",
            "reapit_client_secret",
            "alto_client_id",
            "alto_client_secret",
            "writeback_backoff_base",
            "writeback_poll_interval",
        )
        env = {f"NURTUREHUB_{name.upper()}": str(getattr(config, name)) for name in names}
        env.update(overrides)
        return env

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def script_reads(self, *statuses: int) -> None:
        with self._lock:
            self._read_script.extend(statuses)

    def writes(self, provider: str | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if provider is None or r.provider == provider]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    async def _token(self, request: Request) -> Response:
        seen = await self._seen(request)  # never await while holding the (thread) lock
        with self._lock:
            self.token_requests.append(seen)
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(b"platform-client:platform-secret").decode()
        if auth != expected:
            return Response(orjson.dumps({"error": "invalid_client"}), status_code=400)
        body = {"access_token": f"tok-{uuid.uuid4().hex[:8]}", "token_type": "Bearer", "expires_in": 3600}
        return Response(orjson.dumps(body), media_type="application/json")

    async def _seen(self, request: Request) -> Seen:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        provider = request.path_params["provider"]
        contact = text = None
        if isinstance(body, dict):
            if provider == "reapit":
                contact, text = body.get("associatedId"), body.get("description")
            elif provider == "alto":
                contact, text = str(body.get("contactIds", [None])[0]), body.get("notes")
            elif provider == "street":
                data = body.get("data", {})
                contact = data.get("relationships", {}).get("person", {}).get("data", {}).get("id")
                attributes = data.get("attributes", {})
                text = attributes.get("body") or attributes.get("description")
        return Seen(
            provider,
            request.url.path,
            str(request.url),
            dict(request.headers),
            body,
            time.monotonic(),
            contact,
            text,
        )

    async def _write(self, request: Request) -> Response:
        seen = await self._seen(request)
        key = f"{seen.provider}:{seen.contact}"
        with self._lock:
            self.requests.append(seen)
            behaviour = (
                self._script.pop(0) if self._script else self.per_provider.get(seen.provider, self.default)
            )
            if self._in_flight[key]:
                self.overlaps += 1
            self._in_flight[key] += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._answer(seen, behaviour)
        finally:
            with self._lock:
                self._in_flight[key] -= 1

    async def _read(self, request: Request) -> Response:
        seen = await self._seen(request)
        with self._lock:
            self.reads.append(seen)
            status = self._read_script.pop(0) if self._read_script else 200
        # A refusal echoes the request's credentials back, as a careless CRM might.
        body = {"data": []} if status == 200 else {"error": "nope", "yourHeaders": seen.headers}
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    async def _answer(self, seen: Seen, behaviour: Behaviour) -> Response:
        if isinstance(behaviour, tuple) and behaviour[0] == "trickle":
            pause = behaviour[1]

            async def drip() -> Any:
                for _ in range(10):
                    await asyncio.sleep(pause)
                    yield b" "

            return StreamingResponse(drip(), status_code=201, media_type="application/json")
        if behaviour == "malformed":
            return Response(b'{"data": {"id": ', status_code=201, media_type="application/json")
        if isinstance(behaviour, tuple) and behaviour[0] == "hang":
            await asyncio.sleep(behaviour[1])
            behaviour = "ok"
        if behaviour == "ok":
            new_id = uuid.uuid4().hex[:11].upper()
            if seen.provider == "reapit":
                return Response(
                    status_code=201, headers={"Location": f"{self.url}/reapit/journalEntries/{new_id}"}
                )
            if seen.provider == "alto":
                return Response(
                    orjson.dumps(int(time.time() * 1000)), status_code=201, media_type="application/json"
                )
            return Response(
                orjson.dumps({"data": {"id": str(uuid.uuid4()), "type": "note"}}),
                status_code=201,
                media_type="application/vnd.api+json",
            )
        status, headers = behaviour if isinstance(behaviour, tuple) else (behaviour, {})
        # Echo the request's credentials back, as a careless CRM might: none of it may leak.
        echo = {"error": "nope", "yourHeaders": seen.headers, "yourBody": seen.body}
        return Response(
            orjson.dumps(echo), status_code=status, headers=headers, media_type="application/json"
        )
