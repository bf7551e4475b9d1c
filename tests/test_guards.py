"""Guards: every procedure has one, tokens resolve to principals, roles are enforced first."""

from __future__ import annotations

import time
from uuid import UUID

import pytest

from procedures import app_router
from server import procedure, tokens
from server.accounts import issue_token, revoke_token
from server.procedure import Guard, Procedure
from tests.support import Rpc, RpcError, query, wait_until


def test_every_procedure_in_the_registry_declares_a_guard() -> None:
    assert len(app_router) >= 2
    unguarded = [
        name
        for name, proc in app_router.items()
        if not isinstance(proc, Procedure) or not isinstance(proc.guard, Guard)
    ]
    assert unguarded == []


def test_a_procedure_cannot_be_built_without_a_guard() -> None:
    async def handler(ctx, params):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError, match="guard"):
        procedure.query()(handler)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="guard must be"):
        procedure.query(guard="admin")(handler)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer nh_" + "a" * 38},  # right shape, wrong checksum
    ],
)
def test_missing_or_malformed_token_is_unauthorized(rpc: Rpc, headers: dict[str, str]) -> None:
    response = rpc.http.post(
        "/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"}, headers=headers
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == -32001 and error["data"]["code"] == "UNAUTHORIZED"


def test_well_formed_but_unknown_token_is_unauthorized(rpc: Rpc) -> None:
    error = rpc.error("auth.whoami", {}, token=tokens.generate())
    assert error["data"]["code"] == "UNAUTHORIZED"


def _token_id(database_url: str, token: str):
    ((token_id,),) = query(
        database_url, "SELECT id FROM api_tokens WHERE token_hash = %s", (tokens.hash_token(token),)
    )
    return token_id


def _revoke(loop, db, token_id) -> bool:
    async def revoke() -> bool:
        async with db.transaction() as tx:
            return await revoke_token(tx, token_id)

    return loop.run(revoke())


def _refused(rpc: Rpc, token: str) -> bool:
    try:
        rpc.call("auth.whoami", {}, token=token)
    except RpcError as exc:
        return exc.code == "UNAUTHORIZED"
    return False


def test_revocation_takes_effect_at_once_despite_the_token_cache(
    rpc: Rpc, world, loop, db, database_url
) -> None:
    org = world.org()
    for _ in range(3):  # warm the server's principal cache
        assert rpc.call("auth.whoami", {}, token=org.member_token)["role"] == "member"
    assert _revoke(loop, db, _token_id(database_url, org.member_token)) is True
    started = time.monotonic()
    assert wait_until(lambda: _refused(rpc, org.member_token), timeout=2, interval=0.005)
    assert time.monotonic() - started < 1.0  # the NOTIFY arrives in milliseconds, not the cache's 5 s
    assert rpc.call("auth.whoami", {}, token=org.owner_token)["role"] == "owner"
    assert _revoke(loop, db, _token_id(database_url, org.member_token)) is False  # already revoked


def test_a_role_change_reaches_existing_tokens_at_once(rpc: Rpc, world, loop, db) -> None:
    org = world.org()
    email = rpc.call("auth.whoami", {}, token=org.member_token)["user"]["email"]

    async def promote() -> None:
        async with db.transaction() as tx:
            await issue_token(tx, UUID(org.id), email, "admin")

    loop.run(promote())
    assert wait_until(
        lambda: rpc.call("auth.whoami", {}, token=org.member_token)["role"] == "admin",
        timeout=2,
        interval=0.005,
    )


def test_revocation_applies_while_the_revocation_listener_is_down(
    rpc: Rpc, world, loop, db, database_url
) -> None:
    org = world.org()
    rpc.call("auth.whoami", {}, token=org.admin_token)
    # Cut every server's LISTEN connection: the cache must be bypassed, not trusted, until it is back.
    query(
        database_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN nurturehub_auth%%' AND datname = current_database()",
    )
    assert _revoke(loop, db, _token_id(database_url, org.admin_token)) is True
    assert wait_until(lambda: _refused(rpc, org.admin_token), timeout=2, interval=0.005)


def test_last_used_time_is_recorded(rpc: Rpc, world, database_url) -> None:
    org = world.org()
    rpc.call("auth.whoami", {}, token=org.admin_token)
    ((last_used,),) = query(
        database_url,
        "SELECT last_used_at FROM api_tokens WHERE token_hash = %s",
        (tokens.hash_token(org.admin_token),),
    )
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


def test_the_cache_bounds_staleness_even_without_a_notification(world, database_url) -> None:
    from procedures import app_router
    from tests.support import ServerThread

    server = ServerThread(database_url, app_router, auth_cache_seconds=1.0)
    try:
        client = Rpc(server.url)
        org = world.org()
        assert wait_until(lambda: server.app.state.dispatcher.authenticator.listening, timeout=5)
        client.call("auth.whoami", {}, token=org.member_token)
        # A revocation written behind the application's back sends no NOTIFY: the cached principal
        # is served until it expires, and never longer.
        query(
            database_url,
            "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = %s",
            (tokens.hash_token(org.member_token),),
        )
        assert client.call("auth.whoami", {}, token=org.member_token)["role"] == "member"
        started = time.monotonic()
        assert wait_until(lambda: _refused(client, org.member_token), timeout=3, interval=0.05)
        assert 0.5 < time.monotonic() - started < 1.6
    finally:
        server.stop()
