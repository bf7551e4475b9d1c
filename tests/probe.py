"""Test-only procedures that exercise the framework itself (guards, audit, failures, the pool)."""

from __future__ import annotations

from pydantic import Field

from procedures import app_router
from server.audit import audit_cte
from server.context import Context
from server.db import sql
from server.encoded import Encoded, encode
from server.models import WireModel
from server.procedure import ADMIN, AUTHED, PUBLIC, Router, mutation, query


class Empty(WireModel):
    pass


class Ok(WireModel):
    ok: bool


class RenameOrganisationParams(WireModel):
    name: str = Field(min_length=1, max_length=200)


class SleepParams(WireModel):
    seconds: float = Field(ge=0, le=5)


class Renamed(WireModel):
    name: str


class Transaction(WireModel):
    transaction_id: int
    backend_pid: int


RENAME = sql("UPDATE organisations SET name = :name WHERE id = :id RETURNING name")


@mutation(guard=ADMIN)
async def rename_organisation(ctx: Context, params: RenameOrganisationParams) -> Renamed:
    """Rename the caller's organisation."""
    name = await ctx.db.scalar(RENAME, {"name": params.name, "id": ctx.organisation_id})
    ctx.record("organisation", ctx.organisation_id, ["name"])
    return Renamed(name=name)


RENAME_AUDITED = sql(
    f"""
    WITH o AS (UPDATE organisations SET name = :name WHERE id = :id RETURNING id, name),
         {audit_cte("o", "o.id")}
    SELECT o.name FROM o CROSS JOIN audit
""",
    last=True,
)
CURRENT_NAME = sql("SELECT name FROM organisations WHERE id = :id")


class RenameThenParams(RenameOrganisationParams):
    # What the handler does around the one-statement rename: "read first" runs a statement
    # before it (so BEGIN is sent), "write after" one after it; both, or neither.
    around: str = ""


@mutation(guard=ADMIN)
async def rename_in_one_statement(ctx: Context, params: RenameThenParams) -> Renamed:
    """Rename the caller's organisation with a statement that carries its audit row."""
    keys = {"id": ctx.organisation_id}
    if "read first" in params.around:
        await ctx.db.scalar(CURRENT_NAME, keys)
    name = await ctx.db.scalar(
        RENAME_AUDITED, ctx.audited({**keys, "name": params.name}, "organisation", ["name"])
    )
    if "write after" in params.around:
        await ctx.db.execute(RENAME, {**keys, "name": params.name + " again"})
    return Renamed(name=name)


@query(guard=ADMIN)
async def admin_only(ctx: Context, params: RenameOrganisationParams) -> Ok:
    """An admin-only query whose params must be valid."""
    return Ok(ok=True)


@query(guard=PUBLIC)
async def sleep(ctx: Context, params: SleepParams) -> Ok:
    """Hold a database connection for a while."""
    await ctx.db.execute(sql("SELECT pg_sleep(:seconds)"), {"seconds": params.seconds})
    return Ok(ok=True)


@query(guard=AUTHED)
async def sleep_as_member(ctx: Context, params: SleepParams) -> Ok:
    """Hold a database connection for a while, as a member of an organisation."""
    await ctx.db.execute(sql("SELECT pg_sleep(:seconds)"), {"seconds": params.seconds})
    return Ok(ok=True)


@query(guard=PUBLIC)
async def transaction(ctx: Context, params: Empty) -> Transaction:
    """Which transaction and connection this call ran on."""
    row = await ctx.db.one(sql("SELECT txid_current() AS transaction_id, pg_backend_pid() AS backend_pid"))
    assert row is not None
    return Transaction(transaction_id=row["transaction_id"], backend_pid=row["backend_pid"])


@query(guard=PUBLIC)
async def broken(ctx: Context, params: Empty) -> Ok:
    """Fails with an unexpected exception carrying a secret."""
    raise RuntimeError("secret-detail-7f3a: password=hunter2")


@query(guard=PUBLIC)
async def bad_output(ctx: Context, params: Empty) -> Ok:
    """Returns something that is not an Ok."""
    return {"ok": "not-a-bool", "extra": 1}  # type: ignore[return-value]


@query(guard=PUBLIC)
async def bad_encoded_output(ctx: Context, params: Empty) -> Encoded[Ok]:
    """Serialises something that is not an Ok itself."""
    return encode({"ok": "not-a-bool"})


probe_router = Router(
    {
        **app_router,
        **Router.merge(
            {
                "probe": Router(
                    {
                        "renameOrganisation": rename_organisation,
                        "renameInOneStatement": rename_in_one_statement,
                        "adminOnly": admin_only,
                        "sleep": sleep,
                        "sleepAsMember": sleep_as_member,
                        "broken": broken,
                        "transaction": transaction,
                        "badOutput": bad_output,
                        "badEncodedOutput": bad_encoded_output,
                    }
                )
            }
        ),
    }
)
