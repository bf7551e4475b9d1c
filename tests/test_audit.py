"""Every mutation writes its audit row in its own transaction; a failed audit write undoes it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support import Rpc, query


def audit_rows(url: str, org_id: str, action: str) -> list[tuple]:
    return query(
        url,
        "SELECT actor_user_id, target_type, target_id, changed_fields, request_id "
        "FROM audit_log WHERE organisation_id = %s AND action = %s",
        (org_id, action),
    )


def organisation_name(url: str, org_id: str) -> str:
    return query(url, "SELECT name FROM organisations WHERE id = %s", (org_id,))[0][0]


@contextmanager
def failing_audit_writes(url: str, org_id: str) -> Iterator[None]:
    """Audit writes for this organisation fail, as a full disk or a broken constraint would."""
    function = f"fail_audit_{org_id.replace('-', '')}"
    query(
        url,
        f"""
        CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.organisation_id = '{org_id}' THEN RAISE EXCEPTION 'audit store unavailable'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {function} BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION {function}();
    """,
    )
    try:
        yield
    finally:
        query(url, f"DROP TRIGGER {function} ON audit_log; DROP FUNCTION {function}();")


def test_a_mutation_writes_exactly_one_audit_row(probe: Rpc, world, database_url: str) -> None:
    org = world.org()
    response = probe.post(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "probe.renameOrganisation",
            "params": {"name": "Renamed Estates"},
        },
        token=org.owner_token,
    )
    assert response.json()["result"] == {"name": "Renamed Estates"}
    rows = audit_rows(database_url, org.id, "probe.renameOrganisation")
    assert len(rows) == 1
    actor, target_type, target_id, fields, request_id = rows[0]
    assert str(actor) == org.owner_id
    assert (target_type, target_id, fields) == ("organisation", org.id, ["name"])
    assert request_id == response.headers["x-request-id"]


def test_queries_write_no_audit_rows(probe: Rpc, world, database_url: str) -> None:
    org = world.org()
    probe.call("auth.whoami", {}, token=org.owner_token)
    probe.call("probe.adminOnly", {"name": "x"}, token=org.owner_token)
    rows = query(database_url, "SELECT action FROM audit_log WHERE organisation_id = %s", (org.id,))
    assert [r[0] for r in rows if not r[0].startswith("cli.")] == []


def test_a_failed_audit_write_leaves_nothing_behind(probe: Rpc, world, database_url: str) -> None:
    org = world.org("Before")
    before = organisation_name(database_url, org.id)
    with failing_audit_writes(database_url, org.id):
        error = probe.error("probe.renameOrganisation", {"name": "After"}, token=org.owner_token)
    assert error["code"] == -32603 and error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "audit" not in error["message"]
    assert organisation_name(database_url, org.id) == before
    assert audit_rows(database_url, org.id, "probe.renameOrganisation") == []


def test_the_audit_log_is_append_only(database_url: str) -> None:
    import psycopg
    import pytest

    with pytest.raises(psycopg.errors.RaiseException):
        query(database_url, "UPDATE audit_log SET action = 'x'")
    with pytest.raises(psycopg.errors.RaiseException):
        query(database_url, "DELETE FROM audit_log")


def test_calls_in_one_batch_never_share_a_transaction(probe: Rpc) -> None:
    batch = [{"jsonrpc": "2.0", "id": i, "method": "probe.transaction"} for i in range(3)]
    results = [item["result"] for item in probe.post(batch).json()]
    assert len({r["transactionId"] for r in results}) == 3


def test_a_failing_call_in_a_batch_does_not_undo_the_others(probe: Rpc, world, database_url: str) -> None:
    org = world.org()
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "probe.renameOrganisation", "params": {"name": "Kept"}},
        {"jsonrpc": "2.0", "id": 2, "method": "probe.renameOrganisation", "params": {"name": ""}},
        {"jsonrpc": "2.0", "id": 3, "method": "probe.broken"},
    ]
    replies = {item["id"]: item for item in probe.post(batch, token=org.owner_token).json()}
    assert replies[1]["result"] == {"name": "Kept"}
    assert replies[2]["error"]["data"]["issues"][0]["path"] == "name"
    assert replies[3]["error"]["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert query(database_url, "SELECT name FROM organisations WHERE id = %s", (org.id,)) == [("Kept",)]
    assert len(audit_rows(database_url, org.id, "probe.renameOrganisation")) == 1


# A mutation written as one statement that carries its own audit row (server/audit.py, audit_cte).


def rename_in_one_statement(probe: Rpc, org, name: str, around: str = ""):
    return probe.post(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "probe.renameInOneStatement",
            "params": {"name": name, "around": around},
        },
        token=org.owner_token,
    )


def test_a_one_statement_mutation_writes_exactly_one_audit_row(probe: Rpc, world, database_url: str) -> None:
    for around in ("", "read first"):
        org = world.org()
        response = rename_in_one_statement(probe, org, f"Renamed ({around})", around)
        assert response.json()["result"] == {"name": f"Renamed ({around})"}
        assert organisation_name(database_url, org.id) == f"Renamed ({around})"
        rows = audit_rows(database_url, org.id, "probe.renameInOneStatement")
        assert len(rows) == 1, around
        actor, target_type, target_id, fields, request_id = rows[0]
        assert str(actor) == org.owner_id
        assert (target_type, target_id, fields) == ("organisation", org.id, ["name"])
        assert request_id == response.headers["x-request-id"]


def test_a_one_statement_mutation_whose_audit_write_fails_leaves_nothing(
    probe: Rpc, world, database_url: str
) -> None:
    org = world.org()
    before = organisation_name(database_url, org.id)
    with failing_audit_writes(database_url, org.id):
        error = rename_in_one_statement(probe, org, "After").json()["error"]
    assert error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert organisation_name(database_url, org.id) == before
    assert audit_rows(database_url, org.id, "probe.renameInOneStatement") == []


def test_no_statement_may_follow_a_transactions_last(probe: Rpc, world, database_url: str) -> None:
    # Begun before the last statement: the refusal rolls the whole transaction back.
    org = world.org()
    before = organisation_name(database_url, org.id)
    error = rename_in_one_statement(probe, org, "After", "read first, write after").json()["error"]
    assert error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert organisation_name(database_url, org.id) == before
    assert audit_rows(database_url, org.id, "probe.renameInOneStatement") == []
    # The last statement was the transaction: it stands, audited, and the write after it is refused.
    error = rename_in_one_statement(probe, org, "After", "write after").json()["error"]
    assert error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert organisation_name(database_url, org.id) == "After"
    assert len(audit_rows(database_url, org.id, "probe.renameInOneStatement")) == 1
