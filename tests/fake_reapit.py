"""A stateful fake Reapit on 127.0.0.1, for the inbound sync tests (issue 17).

Contacts with server-side `modified` (whole seconds, as Reapit's are) and `_eTag`; GET
/contacts/ with modifiedFrom/modifiedTo (inclusive), sortBy=modified and page-number paging;
GET /contacts/{id}; the token endpoint; the webhook signing-key endpoint with a test Ed25519
key, and `signed()` to sign a webhook body as Reapit does. The role streams (applicants,
landlords, vendors, tenancies, offers: `put_role`) page the same way, each record with
`related[]` contact ids; a role links its contacts through their `relationships` without
bumping the contact's `modified` or eTag (Reapit does not say that it does), and tenancies'
`modifiedFrom` is "after", as Reapit documents it, where the others' is "on or after". The
properties stream (`put_role("properties", ...)`, with `selling`/`letting` dicts; no `related[]`)
pages the same way; a vendor, offer or tenancy naming a `propertyId` gets that property as it is
now under `_embedded.property` when read with `embed=property`, as Reapit embeds the current
record (a property's change does not move its vendors' `modified`). Knobs: `read_script`
(answers for the next reads, e.g. (429, "1"), (500, None) or (200, "malformed") for a body that
is not JSON), `signing_fails`.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integrations.config import CrmConfig
from tests.support import free_port, serve_loopback

KEY_ID = "test-key-1"
# Each role stream, and the associatedType its records give a contact's relationships.
ROLE_TYPES = {
    "applicants": "applicant", "landlords": "landlord", "vendors": "vendor", "tenancies": "tenancy",
    "offers": "offer",
}  # fmt: skip
STREAMS = (*ROLE_TYPES, "properties")


def _iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeReapit:
    def __init__(self) -> None:
        self.contacts: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, dict[str, Any]]] = {stream: {} for stream in STREAMS}
        self.owners: dict[str, str] = {}  # contact id -> the customer whose it is, when said
        self.clock = int(time.time()) - 3600  # seconds; tests move it with tick()
        self.read_script: list[tuple[int, str | None]] = []
        self.signing_fails = False
        self.contact_reads = 0
        self.key_reads = 0
        # Reapit's published limits, when `enforce_limits`: at most 5 requests in flight per
        # customer and 20 a second; beyond either, 429 with Retry-After.
        self.enforce_limits = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.too_many = 0
        self._second = (0, 0)  # (second, requests in it)
        self._key = Ed25519PrivateKey.generate()
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/contacts/", self._list, methods=["GET"]),
                Route("/contacts/{id}", self._get, methods=["GET"]),
                *(Route(f"/{stream}/", self._list, methods=["GET"]) for stream in STREAMS),
                Route("/webhooks/signing/{kid}", self._signing_key, methods=["GET"]),
            ]
        )
        self._server, self._thread = serve_loopback(app, self.port, "fake Reapit")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    def config(self, **overrides: Any) -> CrmConfig:
        values: dict[str, Any] = {
            "reapit_api_url": self.url,
            "reapit_token_url": f"{self.url}/token",
            "reapit_client_id": "platform-client",
            "reapit_client_secret": "platform-secret",
            "crm_timeout": 2.0,
            "sync_poll_interval": 0.05,
            "sync_page_size": 100.0,
        }
        values.update(overrides)
        return CrmConfig(**values)

    # The CRM's side: people change ------------------------------------------------------------

    def tick(self, seconds: int = 1) -> None:
        self.clock += seconds

    def put(
        self, contact_id: str | None = None, *, customer: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Create or edit a contact, stamped with the clock's second and a new eTag; with
        `customer`, only that customer's reads see it."""
        with self._lock:
            contact_id = contact_id or uuid.uuid4().hex[:9].upper()
            if customer is not None:
                self.owners[contact_id] = customer
            record = self.contacts.get(contact_id) or {
                "id": contact_id,
                "created": _iso(self.clock),
                "active": True,
                "marketingConsent": "notAsked",
                "relationships": [],
                "categoryIds": [],
            }
            record.update(fields)
            record["modified"] = _iso(self.clock)
            record["_eTag"] = f'"{uuid.uuid4().hex}"'
            self.contacts[contact_id] = record
            return dict(record)

    def put_role(
        self, stream: str, role_id: str | None = None, *, contacts: list[str] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Create or edit a role record relating `contacts` (archived with fromArchive=True), or
        a property (no contacts), stamped with the clock; the contacts' relationships follow,
        their `modified` does not."""
        with self._lock:
            role_id = role_id or uuid.uuid4().hex[:9].upper()
            record = self.roles[stream].get(role_id) or {"id": role_id, "created": _iso(self.clock)}
            record.update(fields)
            record["modified"] = _iso(self.clock)
            record["_eTag"] = f'"{uuid.uuid4().hex}"'
            self.roles[stream][role_id] = record
            if stream not in ROLE_TYPES:
                return dict(record)
            contacts = contacts or []
            record["related"] = [{"id": c, "type": "contact"} for c in contacts]
            archived = bool(fields.get("fromArchive"))
            for contact in self.contacts.values():
                links = [r for r in contact["relationships"] if r.get("associatedId") != role_id]
                if contact["id"] in contacts:
                    link = {"associatedType": ROLE_TYPES[stream], "associatedId": role_id}
                    links.append({**link, "fromArchive": archived})
                contact["relationships"] = links
            return dict(record)

    # Webhooks ----------------------------------------------------------------------------------

    def event(
        self,
        topic: str,
        record: dict[str, Any] | None,
        *,
        customer: str,
        event_id: str | None = None,
        old: dict[str, Any] | None = None,
    ) -> bytes:
        return orjson.dumps(
            {
                "eventId": event_id or str(uuid.uuid4()),
                "entityId": (record or old or {}).get("id"),
                "customerId": customer,
                "eventTime": _iso(self.clock),
                "topicId": topic,
                "new": record,
                "old": old,
            }
        )

    def signed(
        self, body: bytes, stamp: int | None = None, key: Ed25519PrivateKey | None = None
    ) -> dict[str, str]:
        stamp = int(time.time()) if stamp is None else stamp
        signature = (key or self._key).sign(str(stamp).encode() + body)
        return {
            "X-Signature": f"s:{KEY_ID}:{stamp}:{base64.b64encode(signature).decode()}",
            "Content-Type": "application/json",
        }

    # Endpoints ---------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        return Response(
            orjson.dumps({"access_token": "fake-token", "expires_in": 3600}), media_type="application/json"
        )

    async def _signing_key(self, request: Request) -> Response:
        self.key_reads += 1
        if self.signing_fails:
            return Response(status_code=500)
        if request.path_params["kid"] != KEY_ID:
            return Response(status_code=404)
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return Response(
            orjson.dumps({"keys": [{"kid": KEY_ID, "kty": "OKP", "crv": "Ed25519", "x": x}]}),
            media_type="application/json",
        )

    def _scripted(self) -> Response | None:
        if self.read_script:
            status, retry_after = self.read_script.pop(0)
            if retry_after == "malformed":
                body = b'{"_embedded": [{"id": "X"'  # cut short
                return Response(body, status_code=status, media_type="application/json")
            headers = {"Retry-After": retry_after} if retry_after else {}
            return Response(status_code=status, headers=headers)
        return None

    def _over_limit(self) -> Response | None:
        now = int(time.time())
        second, count = self._second
        self._second = (now, count + 1 if second == now else 1)
        if self.enforce_limits and (self.in_flight > 5 or self._second[1] > 20):
            self.too_many += 1
            return Response(status_code=429, headers={"Retry-After": "1"})
        return None

    async def _list(self, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._list_page(request)
        finally:
            self.in_flight -= 1

    def _list_page(self, request: Request) -> Response:
        self.contact_reads += 1
        limited = self._over_limit()
        if limited is not None:
            return limited
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        q = request.query_params
        size = min(int(q.get("pageSize", 25)), 100)
        number = int(q.get("pageNumber", 1))
        customer = request.headers.get("reapit-customer")
        stream = request.url.path.strip("/")
        with self._lock:
            source = self.contacts if stream == "contacts" else self.roles[stream]
            rows = sorted(
                (
                    r
                    for r in source.values()
                    if stream != "contacts" or self.owners.get(r["id"], customer) == customer
                ),
                key=lambda r: (r["modified"], r["id"]),
            )
        if q.getlist("id"):
            wanted = set(q.getlist("id"))
            rows = [r for r in rows if r["id"] in wanted]
        if "modifiedFrom" in q and stream == "tenancies":
            rows = [r for r in rows if r["modified"] > q["modifiedFrom"]]
        elif "modifiedFrom" in q:
            rows = [r for r in rows if r["modified"] >= q["modifiedFrom"]]
        if "modifiedTo" in q:
            rows = [r for r in rows if r["modified"] <= q["modifiedTo"]]
        page = [
            self._embedding(r, "property" in q.getlist("embed"))
            for r in rows[(number - 1) * size : number * size]
        ]
        body = {
            "_embedded": page,
            "pageNumber": number,
            "pageSize": len(page),
            "pageCount": -(-len(rows) // size),
            "totalCount": len(rows),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    def _embedding(self, record: dict[str, Any], embed: bool) -> dict[str, Any]:
        """The record as sent: an embedded property only when asked, the one its propertyId
        names as it is now (else the `_embedded` a test gave it)."""
        held = {k: v for k, v in record.items() if k != "_embedded"}
        if not embed:
            return held
        current = self.roles["properties"].get(str(record.get("propertyId")))
        if current is not None:
            return {**held, "_embedded": {"property": dict(current)}}
        return dict(record)

    async def _get(self, request: Request) -> Response:
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        record = self.contacts.get(request.path_params["id"])
        if record is None:
            return Response(status_code=404)
        return Response(orjson.dumps(record), media_type="application/json")
