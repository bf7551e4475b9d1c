"""Issue 20, point 5: two `serve` processes on one database agree on revocations and cursors."""

from __future__ import annotations

import json
import os
import subprocess
import time

from server.keys import KEY_ENV
from tests.support import Rpc, RpcError, wait_until
from tests.test_serve import BIN, Serve


def test_two_servers_on_one_database_share_revocations_and_cursors(postgres) -> None:
    # No NURTUREHUB_SUPPRESSION_KEY: the servers agree on cursors through the key they share in
    # the database, not through a variable an operator has to remember to set.
    url = postgres.create_database()
    env = {**{k: v for k, v in os.environ.items() if k != KEY_ENV}, "DATABASE_URL": url}
    one, two = Serve(env), Serve(env)
    try:
        created = subprocess.run(
            [str(BIN / "nurturehub"), "org", "create", "Two Sites", "--owner-email", "o@two-sites.co.uk"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )
        owner_token = json.loads(created.stdout)["token"]
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

        def refused() -> bool:
            try:
                as_member_on_two.call("auth.whoami")
            except RpcError as exc:
                return exc.code == "UNAUTHORIZED"
            return False

        assert wait_until(refused, timeout=1.0, interval=0.02)
        assert time.monotonic() - revoked_at < 1.0
    finally:
        assert one.stop() == 0
        assert two.stop() == 0
