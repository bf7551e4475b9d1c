"""Issue 20, point 5: two `serve` processes on one database agree on revocations, cursors and
rate limits."""

from __future__ import annotations

import json
import os
import subprocess
import time

from server.keys import KEY_ENV
from tests.support import Rpc
from tests.test_serve import BIN, Serve
from tests.test_tokens import refused_soon


def create_org(env: dict[str, str], name: str, email: str) -> str:
    """The owner's token of a new organisation, made with the CLI."""
    created = subprocess.run(
        [str(BIN / "nurturehub"), "org", "create", name, "--owner-email", email],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    return str(json.loads(created.stdout)["token"])


def test_two_servers_on_one_database_share_revocations_and_cursors(postgres) -> None:
    # No NURTUREHUB_SUPPRESSION_KEY: the servers agree on cursors through the key they share in
    # the database, not through a variable an operator has to remember to set.
    url = postgres.create_database()
    env = {**{k: v for k, v in os.environ.items() if k != KEY_ENV}, "DATABASE_URL": url}
    one, two = Serve(env), Serve(env)
    try:
        owner_token = create_org(env, "Two Sites", "o@two-sites.co.uk")
        on_one, on_two = Rpc(one.url, owner_token), Rpc(two.url, owner_token)

        # A cursor made by one server pages on the other.
        for n in range(3):
            on_one.call("contacts.create", {"firstName": f"Site{n}", "lastName": "Contact"})
        first = on_one.call("contacts.list", {"limit": 2})
        assert len(first["items"]) == 2 and first["nextCursor"]
        rest = on_two.call("contacts.list", {"limit": 2, "cursor": first["nextCursor"]})
        seen = [c["id"] for c in first["items"]] + [c["id"] for c in rest["items"]]
        assert len(rest["items"]) == 1 and len(set(seen)) == 3

        # A token revoked on one server is refused by the other within a second, though the
        # other had just resolved it (and cached it).
        member = on_one.call("auth.createToken", {"email": "m@two-sites.co.uk", "role": "member"})
        as_member_on_two = Rpc(two.url, member["token"])
        for _ in range(3):
            assert as_member_on_two.call("auth.whoami")["role"] == "member"
        on_one.call("auth.revokeToken", {"id": member["id"]})
        revoked_at = time.monotonic()
        assert refused_soon(as_member_on_two)
        assert time.monotonic() - revoked_at < 1.0
    finally:
        assert one.stop() == 0
        assert two.stop() == 0


def test_two_servers_on_one_database_share_a_rate_limit(postgres) -> None:
    """Calls spread over both servers are counted once: 40 calls at a limit of 20 a minute are
    20 admitted, whichever server took them (a limit of 20 leases one permit at a time)."""
    from tests.test_rate_limits import fresh_minute

    url = postgres.create_database()
    env = {
        **{k: v for k, v in os.environ.items() if k != KEY_ENV}, "DATABASE_URL": url,
        "NURTUREHUB_RATE_LIMIT_PER_TOKEN": "20", "NURTUREHUB_RATE_LIMIT_PER_ORG": "1000",
    }
    one, two = Serve(env), Serve(env)
    try:
        token = create_org(env, "Shared Limits", "o@shared-limits.co.uk")
        servers = [Rpc(one.url, token), Rpc(two.url, token)]
        fresh_minute(url)
        statuses = [servers[n % 2].post({"jsonrpc": "2.0", "id": n, "method": "auth.whoami"}).status_code
                    for n in range(40)]
        assert statuses.count(200) == 20 and statuses.count(429) == 20
        # Both servers refused, each knowing of the other's calls.
        assert 429 in statuses[0::2] and 429 in statuses[1::2]
    finally:
        assert one.stop() == 0
        assert two.stop() == 0
