"""Guards: every procedure has one, tokens resolve to principals, roles are enforced first."""

from __future__ import annotations

import pytest

from procedures import app_router
from server import tokens
from server.accounts import revoke_token
from server.procedure import Guard, Procedure, query
from tests.support import Rpc, query


def test_every_procedure_in_the_registry_declares_a_guard() -> None:
    assert len(app_router) >= 2
    unguarded = [name for name, proc in app_router.items()
                 if not isinstance(proc, Procedure) or not isinstance(proc.guard, Guard)]
    assert unguarded == []


def test_a_procedure_cannot_be_built_without_a_guard() -> None:
    async def handler(ctx, params):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError):
        query()(handler)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        query(guard="admin")(handler)  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer not-a-token"},
    {"Authorization": "Bearer nh_" + "a" * 38},  # right shape, wrong checksum
])
def test_missing_or_malformed_token_is_unauthorized(rpc: Rpc, headers: dict[str, str]) -> None:
    response = rpc.http.post("/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"},
                             headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == -32001 and error["data"]["code"] == "UNAUTHORIZED"


def test_well_formed_but_unknown_token_is_unauthorized(rpc: Rpc) -> None:
    error = rpc.error("auth.whoami", {}, token=tokens.generate())
    assert error["data"]["code"] == "UNAUTHORIZED"


def test_revoked_token_is_refused_on_the_next_call(rpc: Rpc, world, loop, db, database_url) -> None:
    org = world.org()
    assert rpc.call("auth.whoami", {}, token=org.member_token)["role"] == "member"
    ((token_id,),) = query(database_url, "SELECT id FROM api_tokens WHERE token_hash = %s",
                           (tokens.hash_token(org.member_token),))

    async def revoke() -> bool:
        async with db.transaction() as tx:
            return await revoke_token(tx, token_id)

    assert loop.run(revoke()) is True
    assert rpc.error("auth.whoami", {}, token=org.member_token)["data"]["code"] == "UNAUTHORIZED"
    assert rpc.call("auth.whoami", {}, token=org.owner_token)["role"] == "owner"
    assert loop.run(revoke()) is False  # revoking twice changes nothing


def test_last_used_time_is_recorded(rpc: Rpc, world, database_url) -> None:
    org = world.org()
    rpc.call("auth.whoami", {}, token=org.admin_token)
    ((last_used,),) = query(database_url, "SELECT last_used_at FROM api_tokens WHERE token_hash = %s",
                            (tokens.hash_token(org.admin_token),))
    assert last_used is not None


def test_member_calling_an_admin_procedure_is_forbidden(probe: Rpc, world) -> None:
    org = world.org()
    error = probe.error("probe.adminOnly", {"name": "x"}, token=org.member_token)
    assert error["code"] == -32003 and error["data"]["code"] == "FORBIDDEN"
    assert probe.call("probe.adminOnly", {"name": "x"}, token=org.admin_token) == {"ok": True}
    assert probe.call("probe.adminOnly", {"name": "x"}, token=org.owner_token) == {"ok": True}


def test_guard_runs_before_params_are_validated(probe: Rpc, world) -> None:
    org = world.org()
    bad_params = {"nope": 1}
    assert probe.error("probe.adminOnly", bad_params)["data"]["code"] == "UNAUTHORIZED"
    assert probe.error("probe.adminOnly", bad_params, token=org.member_token)["data"]["code"] == "FORBIDDEN"
    assert probe.error("probe.adminOnly", bad_params, token=org.admin_token)["code"] == -32602


def test_whoami_resolves_user_organisation_and_role(rpc: Rpc, world) -> None:
    org = world.org("Whoami Lettings")
    me = rpc.call("auth.whoami", {}, token=org.admin_token)
    assert me["role"] == "admin"
    assert me["organisation"]["id"] == org.id
    assert me["organisation"]["name"].startswith("Whoami Lettings")
    assert me["user"]["email"].startswith("admin-")


def test_token_of_one_organisation_sees_only_its_own(rpc: Rpc, world) -> None:
    first, second = world.org(), world.org()
    assert rpc.call("auth.whoami", {}, token=first.owner_token)["organisation"]["id"] == first.id
    assert rpc.call("auth.whoami", {}, token=second.owner_token)["organisation"]["id"] == second.id
