"""Issue 20, point 3: tokens listed, created and revoked by admins; each user sees their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import Rpc, RpcError, query, wait_until


def refused(rpc: Rpc) -> bool:
    try:
        rpc.call("auth.whoami")
    except RpcError as exc:
        return exc.code == "UNAUTHORIZED"
    return False


def refused_soon(rpc: Rpc) -> bool:
    """The token is refused within a second (the NOTIFY reaches each process's cache in ms)."""
    return wait_until(lambda: refused(rpc), timeout=1.0, interval=0.01)


def test_an_admin_creates_a_member_token_shown_once_that_works_at_once(rpc: Rpc, world: Any) -> None:
    org = world.org()
    admin = rpc.as_(org.admin_token)
    params = {"email": "New.Agent@Agency.co.uk", "role": "member", "name": "laptop"}
    created = admin.call("auth.createToken", params)
    assert created["token"].startswith("nh_") and created["role"] == "member"
    assert rpc.as_(created["token"]).call("auth.whoami")["user"]["email"] == "new.agent@agency.co.uk"
    listed = admin.call("auth.listTokens", {"userId": created["userId"]})["items"]
    assert [(t["id"], t["name"], t["role"]) for t in listed] == [(created["id"], "laptop", "member")]
    assert "token" not in listed[0] and created["token"] not in str(admin.call("auth.listTokens"))


def test_no_role_above_the_callers_and_no_tokens_for_an_owner_from_an_admin(rpc: Rpc, world: Any) -> None:
    org = world.org()
    admin = rpc.as_(org.admin_token)
    error = admin.error("auth.createToken", {"email": "boss@agency.co.uk", "role": "owner"})
    assert error["data"]["code"] == "FORBIDDEN"
    owner_email = rpc.as_(org.owner_token).call("auth.whoami")["user"]["email"]
    error = admin.error("auth.createToken", {"email": owner_email, "role": "admin"})
    assert error["data"]["code"] == "FORBIDDEN"
    error = rpc.as_(org.member_token).error("auth.createToken", {"email": "x@agency.co.uk", "role": "member"})
    assert error["data"]["code"] == "FORBIDDEN"


def test_bad_input_names_its_field(rpc: Rpc, world: Any) -> None:
    org = world.org()
    error = rpc.as_(org.owner_token).error("auth.createToken", {"email": "not an email", "role": "member"})
    assert error["code"] == -32602 and error["data"]["issues"][0]["path"] == "email"
    error = rpc.as_(org.owner_token).error("auth.createToken", {"email": "a@b.co.uk", "role": "root"})
    assert error["code"] == -32602 and error["data"]["issues"][0]["path"] == "role"


def test_revocation_is_immediate_and_audited(rpc: Rpc, world: Any, database_url: str) -> None:
    org = world.org()
    owner = rpc.as_(org.owner_token)
    created = owner.call("auth.createToken", {"email": "temp@agency.co.uk", "role": "member"})
    assert rpc.as_(created["token"]).call("auth.whoami")
    revoked = owner.call("auth.revokeToken", {"id": created["id"]})
    assert revoked["id"] == created["id"]
    assert refused_soon(rpc.as_(created["token"]))
    assert owner.error("auth.revokeToken", {"id": created["id"]})["data"]["code"] == "NOT_FOUND"
    actions = query(
        database_url,
        "SELECT action FROM audit_log WHERE organisation_id = %s AND target_id = %s ORDER BY id",
        (org.id, created["id"]),
    )
    assert [a for (a,) in actions] == ["auth.createToken", "auth.revokeToken"]


def test_members_see_and_revoke_only_their_own_tokens(rpc: Rpc, world: Any) -> None:
    org, other = world.org(), world.org()
    member = rpc.as_(org.member_token)
    mine = member.call("auth.myTokens")["items"]
    assert len(mine) == 1 and mine[0]["current"] is True
    admin_tokens = rpc.as_(org.admin_token).call("auth.myTokens")["items"]
    assert member.error("auth.revokeToken", {"id": admin_tokens[0]["id"]})["data"]["code"] == "NOT_FOUND"
    other_tokens = rpc.as_(other.owner_token).call("auth.myTokens")["items"]
    owner = rpc.as_(org.owner_token)
    assert owner.error("auth.revokeToken", {"id": other_tokens[0]["id"]})["data"]["code"] == "NOT_FOUND"
    assert member.error("auth.listTokens")["data"]["code"] == "FORBIDDEN"
    member.call("auth.revokeToken", {"id": mine[0]["id"]})
    assert refused_soon(member)


def test_an_admin_cannot_revoke_an_owners_token(rpc: Rpc, world: Any) -> None:
    org = world.org()
    owner_tokens = rpc.as_(org.owner_token).call("auth.myTokens")["items"]
    error = rpc.as_(org.admin_token).error("auth.revokeToken", {"id": owner_tokens[0]["id"]})
    assert error["data"]["code"] == "NOT_FOUND"
    listed = rpc.as_(org.admin_token).call("auth.listTokens", {"includeRevoked": True})["items"]
    assert {t["role"] for t in listed} == {"owner", "admin", "member"}


def test_a_token_for_yourself_keeps_your_role(rpc: Rpc, world: Any) -> None:
    org = world.org()
    owner = rpc.as_(org.owner_token)
    email = owner.call("auth.whoami")["user"]["email"]
    assert owner.error("auth.createToken", {"email": email, "role": "member"})["data"]["code"] == "FORBIDDEN"
    again = owner.call("auth.createToken", {"email": email, "role": "owner", "name": "second laptop"})
    assert rpc.as_(again["token"]).call("auth.whoami")["role"] == "owner"


def test_a_token_stops_working_when_it_expires(rpc: Rpc, world: Any) -> None:
    org = world.org()
    owner = rpc.as_(org.owner_token)
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    params = {"email": "temp@agency.co.uk", "role": "member", "expiresAt": soon}
    created = owner.call("auth.createToken", params)
    assert created["expiresAt"] is not None
    temporary = rpc.as_(created["token"])
    # Used (and so cached) while valid, then refused once its time has come, cache or not.
    assert temporary.call("auth.whoami")["role"] == "member"
    [listed] = [t for t in owner.call("auth.listTokens")["items"] if t["id"] == created["id"]]
    assert datetime.fromisoformat(listed["expiresAt"]) == datetime.fromisoformat(soon)
    assert wait_until(lambda: refused(temporary), timeout=5.0, interval=0.1)
    assert "expired" in temporary.error("auth.whoami")["message"]


def test_an_expiry_in_the_past_or_without_a_zone_names_its_field(rpc: Rpc, world: Any) -> None:
    owner = rpc.as_(world.org().owner_token)
    for when in ((datetime.now(UTC) - timedelta(minutes=1)).isoformat(), "2030-01-01T00:00:00"):
        params = {"email": "a@agency.co.uk", "role": "member", "expiresAt": when}
        error = owner.error("auth.createToken", params)
        assert error["code"] == -32602 and error["data"]["issues"][0]["path"] == "expiresAt", error
    assert not [t for t in owner.call("auth.listTokens")["items"] if t["email"] == "a@agency.co.uk"]

