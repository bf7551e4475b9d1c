"""A fake Alto on 127.0.0.1 for the contacts poll: the platform's token endpoint (client
credentials), `GET /contacts/all` with the AgencyRef header, `modified-from`, `max-results` (at
most 250) and an opaque `next-token` (the shapes of the third-party transcription; the sync reads
each name from the connection's settings), `GET /contacts/{id}` for a webhook's contact, and
`GET /contacts/{id}/preferences`, the contact's marketing preferences as a bare list (as the
transcription has it), set with `prefer` and counted in `preference_reads`. Its Date header follows
its own clock. Knobs, answers for the next reads: `read_script` (the listing and a contact) and
`preferences_script` (preferences): (429, "2") with Retry-After, (500, None), ("hang", seconds),
(200, "malformed") for a body cut short, or (None, None) for a read answered as usual."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integrations.config import CrmConfig
from tests.support import free_port, serve_loopback

AGENCY_REF = "3f2b8c1e-1111-4a2b-9c3d-5e6f7a8b9c0d"
CLIENT_ID, CLIENT_SECRET = "alto-client", "alto-secret"


def _iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeAlto:
    def __init__(self) -> None:
        self.contacts: dict[str, dict[str, Any]] = {}
        self.agency_ref = AGENCY_REF  # the one agency it answers for
        self.clock = int(time.time()) - 3600
        self.reads = 0
        self.preferences: dict[str, list[dict[str, Any]]] = {}  # contact id -> its preferences
        self.preference_reads = 0
        self.read_script: list[tuple[Any, Any]] = []
        self.preferences_script: list[tuple[Any, Any]] = []
        self.tokens_issued = 0
        self._pages: dict[str, list[dict[str, Any]]] = {}  # token -> the rest of a listing
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/contacts/all", self._list, methods=["GET"]),
                Route("/contacts/{contact_id}", self._one, methods=["GET"]),
                Route("/contacts/{contact_id}/preferences", self._preferences, methods=["GET"]),
            ]
        )
        self._server, self._thread = serve_loopback(app, self.port, "fake Alto", date_header=False)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def config(self, **overrides: Any) -> CrmConfig:
        return CrmConfig(
            alto_api_url=self.url, alto_token_url=f"{self.url}/token", alto_client_id=CLIENT_ID,
            alto_client_secret=CLIENT_SECRET, **overrides,
        )  # fmt: skip

    def tick(self, seconds: int = 1) -> None:
        self.clock += seconds

    def put(self, contact_id: str | None = None, **fields: Any) -> dict[str, Any]:
        with self._lock:
            contact_id = contact_id or str(len(self.contacts) + 1000)
            record = self.contacts.get(contact_id) or {"id": int(contact_id), "people": []}
            record.update(fields)
            record["modified"] = _iso(self.clock)
            self.contacts[contact_id] = record
            return orjson.loads(orjson.dumps(record))  # type: ignore[no-any-return]

    def prefer(
        self, contact_id: str, status: str, when: int | None = None, kind: str = "GeneralMarketing"
    ) -> None:
        """Set one preference of the contact (its others kept), actioned at `when` (the clock's
        second by default). Its record's `modified` is left alone: whether Alto moves it is
        not documented; `put` the contact as well for a change the listing shows."""
        with self._lock:
            kept = [p for p in self.preferences.get(contact_id, []) if p["type"] != kind]
            self.preferences[contact_id] = kept + [
                {"type": kind, "optInStatus": status, "dateActioned": _iso(when or self.clock),
                 "actionedBy": "Negotiator", "notes": None},
            ]  # fmt: skip

    async def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return Response(status_code=401)
        self.tokens_issued += 1
        return Response(orjson.dumps({"access_token": "alto-token", "expires_in": 3600}))

    def _refused(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != "Bearer alto-token":
            return Response(status_code=401)
        if request.headers.get("agencyref") != self.agency_ref:
            return Response(status_code=403)
        return None

    async def _scripted(self, script: list[tuple[Any, Any]]) -> Response | None:
        if not script:
            return None
        status, detail = script.pop(0)
        if status is None:  # this read answers as usual
            return None
        if status == "hang":
            await asyncio.sleep(float(detail))
            return None
        if detail == "malformed":
            return Response(b'[{"type": "GeneralMark', status_code=200, media_type="application/json")
        headers = {"Retry-After": str(detail)} if detail else {}
        return Response(status_code=int(status), headers=headers)

    async def _preferences(self, request: Request) -> Response:
        self.preference_reads += 1
        if refused := self._refused(request):
            return refused
        if scripted := await self._scripted(self.preferences_script):
            return scripted
        contact_id = request.path_params["contact_id"]
        with self._lock:
            if contact_id not in self.contacts:
                return Response(status_code=404)
            body = orjson.dumps(self.preferences.get(contact_id, []))
        return Response(body, media_type="application/json")

    async def _one(self, request: Request) -> Response:
        self.reads += 1
        if refused := self._refused(request):
            return refused
        if scripted := await self._scripted(self.read_script):
            return scripted
        with self._lock:
            record = self.contacts.get(request.path_params["contact_id"])
        if record is None:
            return Response(status_code=404)
        return Response(orjson.dumps(record), media_type="application/json")

    async def _list(self, request: Request) -> Response:
        self.reads += 1
        if refused := self._refused(request):
            return refused
        if scripted := await self._scripted(self.read_script):
            return scripted
        q = request.query_params
        size = int(q.get("max-results", 100))
        if size > 250:
            return Response(status_code=400)
        with self._lock:
            if "next-token" in q:
                rows = self._pages.pop(q["next-token"], None)
                if rows is None:
                    return Response(status_code=400)
            else:
                rows = sorted(self.contacts.values(), key=lambda r: (r["modified"], r["id"]))
                if "modified-from" in q:
                    rows = [r for r in rows if r["modified"] >= q["modified-from"]]
            page, rest = rows[:size], rows[size:]
            token = None
            if rest:
                token = uuid.uuid4().hex
                self._pages[token] = rest
        body = {"items": page, "nextToken": token}
        date = email.utils.formatdate(self.clock, usegmt=True)
        return Response(orjson.dumps(body), media_type="application/json", headers={"Date": date})
