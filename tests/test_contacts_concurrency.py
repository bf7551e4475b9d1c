"""Issue 4: concurrent re-categorisation of one contact keeps one active row and a gap-free history."""

from __future__ import annotations

import threading
import typing
from typing import Any

import httpx

from procedures.contact_fields import Category
from tests.contacts_helpers import create
from tests.support import Rpc, ServerThread, query

CATEGORIES = typing.get_args(Category)


def test_twenty_concurrent_assignments(rpc: Rpc, world: Any, server: ServerThread, database_url: str) -> None:
    org = world.org()
    contact = create(rpc, org, category="seller")
    calls = 20
    barrier = threading.Barrier(calls)
    outcomes: list[Any] = [None] * calls

    def assign(i: int) -> None:
        # Categories 1..20 (mod 12): every call but the no-ops changes the category.
        params = {"id": contact["id"], "category": CATEGORIES[(i + 1) % 12], "reason": f"call {i}"}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            barrier.wait()
            outcomes[i] = http.post(
                "/rpc",
                json={"jsonrpc": "2.0", "id": i, "method": "contacts.assignCategory", "params": params},
                headers={"Authorization": f"Bearer {org.member_token}"},
            ).json()

    threads = [threading.Thread(target=assign, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert all("result" in outcome for outcome in outcomes), [o for o in outcomes if "error" in o]
    active = query(
        database_url,
        "SELECT category FROM lead_category_assignments WHERE contact_id = %s AND superseded_at IS NULL",
        (contact["id"],),
    )
    assert len(active) == 1
    stored = query(database_url, "SELECT active_category FROM contacts WHERE id = %s", (contact["id"],))
    assert stored == active

    history = rpc.call("contacts.getCategoryHistory", {"id": contact["id"]}, org.member_token)
    assert history[0]["supersededAt"] is None and history[0]["category"] == active[0][0]
    assert all(h["supersededAt"] is not None for h in history[1:])
    oldest_first = list(reversed(history))
    for older, newer in zip(oldest_first, oldest_first[1:], strict=False):
        assert older["supersededAt"] == newer["assignedAt"]  # no gap, no overlap
        assert older["category"] != newer["category"]  # a repeat would have been a no-op
    # Every call saw a consistent state: it either made the active row or returned it.
    made = {o["result"]["id"] for o in outcomes}
    assert made <= {h["id"] for h in history}
    assert len(history) >= 2
