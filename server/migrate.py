"""The migration runner: `nurturehub db init | migrate | status | check`, and serve's start.

It works on a connection of its own: no statement timeout (a step may rewrite a large table),
and a session advisory lock held from the first read of the version to the last step, so several
processes starting at once migrate once and the others find nothing left to do. Each step runs
in one transaction with the schema_version row it records (or, for a `transaction: off` step,
statement by statement), under `lock_timeout`: a step that cannot take its locks quickly gives
way to the traffic queued behind it and is tried again later, a few times, before the runner
stops with nothing changed. Before any step, the live schema is compared with what its recorded
version should be (server/catalog.py): the runner never builds on a schema it does not know.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import dict_row

from server import catalog
from server.db import conninfo
from server.schema import SchemaFiles, Step

__all__ = ["MigrationError", "Migrator", "Status", "split_statements"]

MIGRATION_LOCK = 7411025001  # pg_advisory_lock key: one runner per database at a time

# A version-1 database may have been made by one of the development builds of 2026-11-25, whose
# schemas all said version 1. Their catalogs differ from the released version 1 in column order
# (seq, search_vector) and generated columns, which no in-place step reproduces.
DEVELOPMENT_SHAPES = {
    "c4ecd64cedcc85e05d5b386b367aa1c480d6ec446b998ec69751d7a5d7faa8f4": "64ce061",
    "fe201bb229609f9bf80aa1c98399e76d7c30b864bacd703ed462be71e900d7b8": "86a5535",
    "1e7e8876db1e5a89e55326c934efaa4552d22d96e0128a8e720664fecae83a6f": "d93e89c",
    "942f6e44fe166752b8c682c899c814312e8af5a8e19e72cc39658d63c368172f": "3d8c78f",
}

_HAS_VERSION_TABLE = "SELECT to_regclass('public.schema_version') IS NOT NULL"
_OUR_TABLES = """
    SELECT count(*) FROM pg_catalog.pg_tables
     WHERE schemaname = 'public'
       AND tablename IN ('organisations', 'contacts', 'crm_connections', 'audit_log')
"""
_CURRENT_VERSION = "SELECT max(version) FROM public.schema_version"
_HAS_HISTORY_COLUMNS = """
    SELECT count(*) = 3 FROM pg_attribute
     WHERE attrelid = 'public.schema_version'::regclass AND NOT attisdropped
       AND attname IN ('name', 'duration_ms', 'backward_compatible')
"""
_HISTORY = "SELECT * FROM public.schema_version ORDER BY version"
_RECORD = """
    INSERT INTO public.schema_version (version, name, duration_ms, backward_compatible)
    VALUES (%(version)s, %(name)s, %(duration_ms)s, %(backward_compatible)s)
"""
_RECORD_VERSION_ONLY = "INSERT INTO public.schema_version (version) VALUES (%(version)s)"
_NEWER_STEPS_KEEP_US_WORKING = """
    SELECT bool_and(backward_compatible) FROM public.schema_version WHERE version > %(head)s
"""


class MigrationError(Exception):
    """The runner stopped; its message is one line that says what to do. Nothing was half-applied."""


@dataclass
class Status:
    """Where a database stands against this code's schema files."""

    version: int | None  # None: no NurtureHub schema yet
    head: int
    pending: list[Step]
    unversioned: bool = False  # NurtureHub tables but no schema_version
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.unversioned:
            return "unversioned"
        if self.version is None:
            return "empty"
        if self.version > self.head:
            return "newer"
        return "pending" if self.pending else "current"

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "databaseVersion": self.version,
            "codeVersion": self.head,
            "pending": [_step_json(step) for step in self.pending],
            "history": [
                {
                    "version": row["version"],
                    "appliedAt": row["applied_at"].isoformat(),
                    "name": row.get("name"),
                    "durationMs": row.get("duration_ms"),
                    "backwardCompatible": row.get("backward_compatible"),
                }
                for row in self.history
            ],
        }


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "version": step.version,
        "name": step.name,
        "transaction": step.transactional,
        "backwardCompatible": step.backward_compatible,
        "locks": step.locks,
    }


class Migrator:
    def __init__(
        self,
        database_url: str,
        files: SchemaFiles | None = None,
        *,
        lock_timeout: float = 5.0,
        tries: int = 5,
        retry_delay: float = 2.0,
        runner_wait: float = 600.0,
    ) -> None:
        self.url = conninfo(database_url)
        self.files = files or SchemaFiles.load()
        self.lock_timeout = lock_timeout
        self.tries = tries
        self.retry_delay = retry_delay
        self.runner_wait = runner_wait

    # Commands ------------------------------------------------------------------------------------

    async def status(self) -> Status:
        async with self._connection() as conn:
            return await self._status(conn)

    async def init(self) -> str:
        """Create the schema in an empty database: 'created', or 'unchanged' when already current.

        Any other state is refused, naming what to do (`db migrate` for an older database).
        """
        async with self._locked() as conn:
            status = await self._status(conn)
            if status.state == "empty":
                await self._create(conn)
                return "created"
            if status.state == "current":
                return "unchanged"
            self._refuse_unless_current(status)
            raise AssertionError("unreachable")

    async def migrate(self, *, create: bool = True) -> dict[str, Any]:
        """Apply every pending step (creating the schema in an empty database when `create`).

        Returns {"from", "to", "created", "applied": [{version, name, durationMs}]}.
        """
        async with self._locked() as conn:
            status = await self._status(conn)
            if status.state == "empty" and create:
                await self._create(conn)
                if self.files.schema_text is not None:
                    return {"from": None, "to": self.files.head, "created": True, "applied": []}
                status = await self._status(conn)  # a cut view: the baseline, then its steps
            if status.state in ("unversioned", "empty", "newer"):
                self._refuse_unless_current(status)
            assert status.version is not None
            await self._verify(conn, status.version)
            applied = []
            for step in status.pending:
                duration_ms = await self._apply(conn, step)
                applied.append({"version": step.version, "name": step.name, "durationMs": duration_ms})
            return {"from": status.version, "to": self.files.head, "created": False, "applied": applied}

    async def check(self) -> dict[str, Any]:
        """The live schema against what its recorded version should be: {version, matches, differences}."""
        async with self._connection() as conn:
            status = await self._status(conn)
            if status.version is None or status.version > self.files.head or (
                status.version < self.files.oldest
            ):
                self._refuse_unless_current(status)
            assert status.version is not None
            found = await self._differences(conn, status.version)
            return {"version": status.version, "matches": not found, "differences": found}

    async def startable(self) -> str | None:
        """For `serve` with nothing to migrate: None when this code may serve the database, else
        a warning to print (a newer database whose steps all keep this version working)."""
        async with self._connection() as conn:
            status = await self._status(conn)
            if status.state == "current":
                found = await self._differences(conn, self.files.head)
                if found:
                    return (
                        f"the database's schema differs from version {self.files.head}'s in "
                        f"{len(found)} place(s) (first: {found[0][:160]}): "
                        f"`nurturehub db check` lists them"
                    )
                return None
            if status.state == "newer":
                cursor = await conn.execute(_NEWER_STEPS_KEEP_US_WORKING, {"head": self.files.head})
                row = await cursor.fetchone()
                if row and row[0]:
                    return (
                        f"the database is at schema version {status.version}, newer than this "
                        f"NurtureHub's {self.files.head}; every newer step keeps version "
                        f"{self.files.head} working, so this server starts: upgrade it soon"
                    )
            self._refuse_unless_current(status)
            return None

    # Reading where the database stands -----------------------------------------------------------

    async def _status(self, conn: psycopg.AsyncConnection[Any]) -> Status:
        head = self.files.head
        if not await _scalar(conn, _HAS_VERSION_TABLE):
            if await _scalar(conn, _OUR_TABLES):
                return Status(None, head, [], unversioned=True)
            return Status(None, head, [])
        version = await _scalar(conn, _CURRENT_VERSION)
        cursor = await conn.cursor(row_factory=dict_row).execute(_HISTORY)
        history = list(await cursor.fetchall())
        pending = self.files.steps_after(version) if version >= self.files.oldest else []
        return Status(version, head, pending, history=history)

    def _refuse_unless_current(self, status: Status) -> None:
        head = self.files.head
        if status.state == "unversioned":
            raise MigrationError(
                "the database has NurtureHub tables but no schema_version table, so its version is "
                "unknown: point DATABASE_URL at a new, empty database and run 'nurturehub db init'"
            )
        if status.state == "empty":
            raise MigrationError(
                "the database has no NurtureHub schema yet: run 'nurturehub db init' (or "
                "'nurturehub db migrate', which creates it)"
            )
        if status.state == "newer":
            raise MigrationError(
                f"the database is at schema version {status.version}, newer than this NurtureHub "
                f"(version {head}), and not every newer step keeps version {head} working: run the "
                f"NurtureHub release that knows version {status.version}"
            )
        assert status.version is not None
        if status.version < self.files.oldest:
            raise MigrationError(
                f"the database is at schema version {status.version}, older than any this "
                f"NurtureHub can upgrade (from {self.files.oldest}): upgrade it with an older "
                f"release first"
            )
        if status.pending:
            raise MigrationError(
                f"the database is at schema version {status.version} and this NurtureHub needs "
                f"{head}: run 'nurturehub db migrate'"
            )

    async def _differences(self, conn: psycopg.AsyncConnection[Any], version: int) -> list[str]:
        try:
            wanted = await catalog.expected(conn, self.files.scripts_at(version))
        except psycopg.errors.InsufficientPrivilege:
            # The comparison builds the expected schema in a scratch schema, rolled back.
            return []
        return catalog.differences(wanted, await catalog.describe(conn))

    async def _verify(self, conn: psycopg.AsyncConnection[Any], version: int) -> None:
        found = await self._differences(conn, version)
        if not found:
            return
        shape = DEVELOPMENT_SHAPES.get(catalog.fingerprint(await catalog.describe(conn)))
        if version == 1 and shape is not None:
            raise MigrationError(
                f"this database was made by a development build of NurtureHub ({shape}, "
                f"2026-11-25) whose version-1 schema predates the first release and cannot be "
                f"upgraded in place: start a new database (move the data folder aside, or point "
                f"DATABASE_URL at a new one) and copy its contacts across with that build's "
                f"procedures"
            )
        raise MigrationError(
            f"the database says schema version {version} but its schema differs from that "
            f"version's in {len(found)} place(s) (first: {found[0][:160]}): run 'nurturehub db "
            f"check' to list them, undo those changes (or restore a backup), then migrate again"
        )

    # Changing it ---------------------------------------------------------------------------------

    async def _create(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """schema.sql in an empty database (a view cut by up_to: its baseline)."""
        script = self.files.schema_text or self.files.baseline_text
        async with conn.transaction():
            await conn.execute(script.encode(), prepare=False)

    async def _apply(self, conn: psycopg.AsyncConnection[Any], step: Step) -> int:
        """Run one step and record it; returns its duration in ms. Raises MigrationError."""
        await conn.execute(f"SET lock_timeout = '{int(self.lock_timeout * 1000)}ms'")
        started = time.monotonic()
        try:
            if step.transactional:
                await self._retrying(step, lambda: self._apply_in_transaction(conn, step, started))
            else:
                for number, statement in enumerate(split_statements(step.text), 1):
                    await self._retrying(step, _runner(conn, statement), number)
                async with conn.transaction():
                    await self._record(conn, step, started)
        except psycopg.Error as exc:
            raise MigrationError(_failure(step, exc)) from None
        finally:
            await conn.execute("RESET lock_timeout")
        return _ms_since(started)

    async def _apply_in_transaction(
        self, conn: psycopg.AsyncConnection[Any], step: Step, started: float
    ) -> None:
        async with conn.transaction():
            await conn.execute(step.text.encode(), prepare=False)
            await self._record(conn, step, started)

    async def _record(self, conn: psycopg.AsyncConnection[Any], step: Step, started: float) -> None:
        row = {
            "version": step.version,
            "name": step.name,
            "duration_ms": _ms_since(started),
            "backward_compatible": step.backward_compatible,
        }
        # Steps before the one that adds the history columns record the version alone.
        detailed = await _scalar(conn, _HAS_HISTORY_COLUMNS)
        await conn.execute(_RECORD if detailed else _RECORD_VERSION_ONLY, row)

    async def _retrying(
        self, step: Step, attempt: Callable[[], Awaitable[Any]], statement: int | None = None
    ) -> None:
        """Run `attempt` again while it cannot take its locks in time, then give up."""
        for tried in range(1, self.tries + 1):
            try:
                await attempt()
                return
            except psycopg.errors.LockNotAvailable:
                if tried == self.tries:
                    where = f" (statement {statement})" if statement else ""
                    raise MigrationError(
                        f"step {step.name}{where} could not take its locks within "
                        f"{self.lock_timeout:g}s in {self.tries} tries: a long transaction holds "
                        f"them (see pg_stat_activity); nothing of the step was applied"
                        + ("" if step.transactional else " beyond statements safe to repeat")
                        + ", run 'nurturehub db migrate' again when it has ended"
                    ) from None
                await asyncio.sleep(self.retry_delay * tried * random.uniform(0.5, 1.5))

    # Connections ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url,
                autocommit=True,
                options="-c statement_timeout=0 -c TimeZone=UTC",
                application_name="nurturehub migrate",
                connect_timeout=10,
            )
        except psycopg.OperationalError as exc:
            raise MigrationError(f"cannot reach the database: {_first_line(exc)}") from None
        try:
            yield conn
        finally:
            await conn.close()

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection holding the runner's advisory lock (released when it closes)."""
        async with self._connection() as conn:
            deadline = time.monotonic() + self.runner_wait
            while not await _scalar(conn, f"SELECT pg_try_advisory_lock({MIGRATION_LOCK})"):
                if time.monotonic() > deadline:
                    raise MigrationError(
                        f"another migration has held the database for over {self.runner_wait:g}s: "
                        f"wait for it (see pg_stat_activity, application 'nurturehub migrate')"
                    )
                await asyncio.sleep(0.1)
            yield conn


def split_statements(text: str) -> list[str]:
    """A SQL script's statements, for steps that run outside a transaction (a multi-statement
    query is one implicit transaction). Knows quotes, dollar quotes and comments."""
    statements: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2)
            i = n if i < 0 else i + 2
            continue
        elif c in ("'", '"'):
            i = text.find(c, i + 1)
            i = n if i < 0 else i
        elif c == "$":
            end = text.find("$", i + 1)
            tag = text[i:end + 1] if end > 0 else ""
            if tag and (tag == "$$" or tag[1:-1].isidentifier()):
                i = text.find(tag, end + 1)
                i = n if i < 0 else i + len(tag) - 1
        elif c == ";":
            statements.append(text[start:i])
            start = i + 1
        i += 1
    statements.append(text[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


def _runner(conn: psycopg.AsyncConnection[Any], statement: str) -> Callable[[], Awaitable[Any]]:
    return lambda: conn.execute(statement.encode(), prepare=False)


async def _scalar(conn: psycopg.AsyncConnection[Any], query: str) -> Any:
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    return None if row is None else row[0]


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _failure(step: Step, exc: psycopg.Error) -> str:
    # The primary message only: a detail line can quote row values (a duplicate key's).
    primary = exc.diag.message_primary or type(exc).__name__
    return (
        f"step {step.name} failed ({exc.sqlstate}: {primary[:200]}); the database stays at the "
        f"version before it"
        + ("" if step.transactional else ", and its statements are safe to repeat")
        + ": fix the cause, then run 'nurturehub db migrate' again"
    )
