"""A stateful fake Street Open API on 127.0.0.1, for the inbound sync tests (issue 17, point 4).

People as JSON:API resources with server-side `updated_at` (whole seconds); GET /people with
`filter[updated_from]` (inclusive), `page[number]` and `page[size]` (at most 100), newest first
as Street lists them (no sort parameter is documented: research crm-sync.md 1.3); a bearer
token is required. Knobs: `read_script`, answers for the next reads: (429, "2") with
Retry-After, (500, None), ("hang", seconds), or (200, "malformed") for a body cut short. Its
Date header tells its own clock (moved by `tick`), as a real CRM's stamps and Date share one.

GET /people/{id} reads one person; `send_webhook` delivers a `person.*` event to a URL as
Street's Svix-style portal would, signed with WEBHOOK_SECRET (or sent in a custom header).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import free_port, serve_loopback

TOKEN = "street-test-token-1"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"street-test-webhook-secret-0123").decode()


def _iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeStreet:
    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self.clock = int(time.time()) - 3600
        self.read_script: list[tuple[int | str, Any]] = []
        self.reads = 0
        self.pages_read: list[int] = []  # the page number of each read, in order
        self.fail_at_read = 0  # this read (counted from 1) answers 500 once, as a dying run's
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[
                Route("/people", self._list, methods=["GET"]),
                Route("/people/{person_id}", self._one, methods=["GET"]),
            ]
        )
        # Its Date header follows its own clock, as a real CRM's stamps and Date share one.
        self._server, self._thread = serve_loopback(app, self.port, "fake Street", date_header=False)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    def tick(self, seconds: int = 1) -> None:
        self.clock += seconds

    def put(self, person_id: str | None = None, **attributes: Any) -> dict[str, Any]:
        """Create or edit a person, stamped with the clock's second."""
        with self._lock:
            person_id = person_id or str(uuid.uuid4())
            record = self.people.get(person_id) or {
                "id": person_id,
                "type": "person",
                "attributes": {"created_at": _iso(self.clock), "marketing_consent": None},
            }
            record["attributes"].update(attributes)
            record["attributes"]["updated_at"] = _iso(self.clock)
            self.people[person_id] = record
            return orjson.loads(orjson.dumps(record))  # type: ignore[no-any-return]

    def trash(self, person_id: str) -> None:
        """Soft-delete a person as Laravel does (Street's JSON:API `trashed` filter is its
        idiom): `trashed_at` set and `updated_at` touched; listed only with `trashed=with`."""
        with self._lock:
            attributes = self.people[person_id]["attributes"]
            attributes["trashed_at"] = attributes["updated_at"] = _iso(self.clock)

    def send_webhook(
        self,
        url: str,
        person_id: str,
        topic: str = "person.marketing-preferences.updated",
        *,
        secret: str = WEBHOOK_SECRET,
        scheme: str = "svix",
        header: str = "x-street-webhook-secret",
        stamp: int | None = None,
        message_id: str | None = None,
    ) -> httpx.Response:
        """One delivery, thin as an undocumented payload may be: the type and the person's id."""
        body = orjson.dumps({"type": topic, "timestamp": _iso(self.clock), "data": {"id": person_id}})
        headers = {"Content-Type": "application/json"}
        if scheme == "header":
            headers[header] = secret
        else:
            message_id = message_id or f"msg_{uuid.uuid4().hex}"
            when = str(int(time.time()) if stamp is None else stamp)
            key = base64.b64decode(secret.removeprefix("whsec_"))
            mac = hmac.new(key, f"{message_id}.{when}.".encode() + body, hashlib.sha256).digest()
            headers |= {
                "webhook-id": message_id,
                "webhook-timestamp": when,
                "webhook-signature": f"v1,{base64.b64encode(mac).decode()}",
            }
        return httpx.post(url, content=body, headers=headers, timeout=5)

    async def _one(self, request: Request) -> Response:
        self.reads += 1
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Response(status_code=401)
        with self._lock:
            record = self.people.get(request.path_params["person_id"])
        if record is None or (
            record["attributes"].get("trashed_at") and request.query_params.get("filter[trashed]") != "with"
        ):
            return Response(status_code=404)
        return Response(orjson.dumps({"data": record}), media_type="application/vnd.api+json")

    async def _list(self, request: Request) -> Response:
        self.reads += 1
        self.pages_read.append(int(request.query_params.get("page[number]", 1)))
        if self.reads == self.fail_at_read:
            return Response(status_code=500)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Response(status_code=401)
        if self.read_script:
            status, detail = self.read_script.pop(0)
            if status == "hang":
                await asyncio.sleep(float(detail))
            elif detail == "malformed":
                return Response(
                    b'{"data": [{"id": "x"', status_code=200, media_type="application/vnd.api+json"
                )
            else:
                headers = {"Retry-After": str(detail)} if detail else {}
                return Response(status_code=int(status), headers=headers)
        q = request.query_params
        size = min(int(q.get("page[size]", 25)), 100)
        number = int(q.get("page[number]", 1))
        with self._lock:
            rows = sorted(
                self.people.values(), key=lambda r: (r["attributes"]["updated_at"], r["id"]), reverse=True
            )
        if q.get("filter[trashed]") != "with":
            rows = [r for r in rows if not r["attributes"].get("trashed_at")]
        if "filter[updated_from]" in q:
            rows = [r for r in rows if r["attributes"]["updated_at"] >= q["filter[updated_from]"]]
        page = rows[(number - 1) * size : number * size]
        body = {
            "data": page,
            "meta": {
                "pagination": {
                    "total": len(rows),
                    "count": len(page),
                    "per_page": size,
                    "current_page": number,
                    "total_pages": -(-len(rows) // size),
                }
            },
        }
        date = email.utils.formatdate(self.clock, usegmt=True)
        return Response(orjson.dumps(body), media_type="application/vnd.api+json", headers={"Date": date})
