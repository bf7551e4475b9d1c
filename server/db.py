"""Database access: pooled psycopg connections (server/pool.py), one transaction per call.

Queries are hand-written SQL constants, `X = sql("... WHERE id = :id")`, with named bound
parameters only. SQLAlchemy Core compiles each constant once, at import, into psycopg's own
parameter style; at run time statements go straight to psycopg (prepared after a few uses), so
no SQL is parsed and no driver adapter runs per call. Handlers get a `Tx`, a thin wrapper with
`one`, `all`, `scalar` and `execute`, so no procedure depends on the driver's API, and database
failures are translated to procedure errors in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from server.errors import Conflict, ServiceUnavailable
from server.pool import Pool, PoolTimeout

__all__ = ["Database", "Row", "Statement", "Tx", "conninfo", "sql"]

Params = Mapping[str, Any]
Row = dict[str, Any]

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


class Statement:
    """A hand-written statement: `text` as written, `query` compiled for psycopg.

    A `last` statement ends its transaction (see Tx): the Tx refuses any statement after it.
    """

    __slots__ = ("last", "query", "text")

    def __init__(self, statement: str, *, last: bool = False) -> None:
        self.text = statement
        self.query = str(text(statement).compile(dialect=_DIALECT))
        self.last = last

    def __repr__(self) -> str:
        return f"sql({self.text.strip()[:60]!r}...)"


def sql(statement: str, *, last: bool = False) -> Statement:
    """A hand-written statement with :named parameters, compiled once; `last`: see Statement."""
    return Statement(statement, last=last)


def conninfo(database_url: str) -> str:
    """psycopg takes postgresql:// URLs; SQLAlchemy-style driver suffixes are dropped."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix):]
    if not database_url.startswith("postgresql://"):
        raise ValueError("DATABASE_URL must start with postgresql://")
    return database_url


def _operational_error(cause: BaseException) -> ServiceUnavailable | Conflict:
    if isinstance(cause, psycopg.errors.QueryCanceled):
        return ServiceUnavailable("Service unavailable: the query took too long")
    if isinstance(cause, (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)):
        return Conflict("Conflict: a concurrent change got there first, try again")
    return ServiceUnavailable("Service unavailable: the database cannot be reached")


class _Connection(psycopg.AsyncConnection[Row]):
    """A pooled connection that keeps its cursors for every transaction it serves.

    A connection runs one statement at a time, and making a cursor costs about as much Python
    work as the rest of a round trip's (a 22-column read: 211 us with a new cursor, 177 us
    reusing one, bench/), so each connection makes them once.
    """

    _statements: psycopg.AsyncCursor[Row] | None = None
    _literals: psycopg.AsyncClientCursor[Row] | None = None

    def statements(self) -> psycopg.AsyncCursor[Row]:
        """The cursor statements run on; its rows are read before the next statement runs."""
        if self._statements is None:
            self._statements = self.cursor()
        return self._statements

    def literals(self) -> psycopg.AsyncClientCursor[Row]:
        """A cursor that only renders statements with their values bound client-side."""
        if self._literals is None:
            self._literals = psycopg.AsyncClientCursor(self)
        return self._literals


class Tx:
    """One open transaction (or, for reads, autocommit statements) on one pooled connection.

    The pool's connections are in autocommit mode, so a read costs one round trip per
    statement and no BEGIN. A write transaction sends BEGIN before its first statement, and
    its COMMIT travels with its last statement (`commit_with`): the two are sent as one
    simple-protocol query, the values bound client-side by psycopg. Every other statement is
    bound server-side and prepared after a few uses.

    A `last` statement ends the transaction. When it is also the first, it runs on its own,
    without BEGIN: PostgreSQL makes a single statement a transaction of its own, so a mutation
    written as one statement costs one round trip. Otherwise the transaction commits when it
    closes, as usual.

    Statements share the connection's cursors, so a Tx serves one task, as a connection does.
    """

    __slots__ = ("connection", "_pending_begin", "_ended")

    def __init__(self, connection: _Connection, *, begin: bool = False) -> None:
        self.connection = connection
        self._pending_begin = begin
        self._ended = False

    async def one(self, statement: Statement, params: Params | None = None) -> Row | None:
        cursor = await self._execute(statement, params)
        return await cursor.fetchone()

    async def all(self, statement: Statement, params: Params | None = None) -> Sequence[Row]:
        cursor = await self._execute(statement, params)
        return await cursor.fetchall()

    async def scalar(self, statement: Statement, params: Params | None = None) -> Any:
        row = await self.one(statement, params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, statement: Statement, params: Params | None = None) -> int:
        """Run a statement; returns the number of rows it touched."""
        cursor = await self._execute(statement, params)
        return cursor.rowcount

    async def run_script(self, script: str) -> None:
        """Run a multi-statement SQL script (no parameters), such as schema.sql."""
        await self._simple(script)

    async def commit_with(self, statement: Statement, params: Params | None = None) -> None:
        """Run a last statement and commit, in one round trip."""
        self._check_not_ended(statement)
        await self._simple(self._literal(statement, params), "COMMIT")

    @property
    def is_open(self) -> bool:
        """True while a transaction is open on the connection (begun and not yet ended)."""
        # pgconn, not info: `info` builds a new object on every read.
        return self.connection.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE

    async def afterwards(self, statement: Statement, params: Params | None = None) -> Sequence[Row]:
        """The rows of a read after the transaction's last statement, to explain, say, why it
        changed nothing. Only a SELECT: a write here could fall outside the transaction."""
        if not self._ended or not statement.text.lstrip().upper().startswith("SELECT"):
            raise RuntimeError(f"{statement!r}: afterwards() is for a SELECT after the last statement")
        cursor = await self._send(self.connection.statements(), statement, params)
        return await cursor.fetchall()

    async def _execute(self, statement: Statement, params: Params | None) -> psycopg.AsyncCursor[Row]:
        self._check_not_ended(statement)
        if self._ended and self._pending_begin:
            self._pending_begin = False  # the statement is the whole transaction
        cursor = self.connection.statements()
        # BEGIN on its own round trip. Sent as text with the statement, the statement would be
        # planned on every call; in a pipeline with it, psycopg's pipeline costs more Python
        # work than the round trip saves (bench/: create's server CPU per request rose in 3 of 3
        # interleaved pairs).
        await self._begin_if_due(cursor)
        return await self._send(cursor, statement, params)

    @staticmethod
    async def _send(
        cursor: psycopg.AsyncCursor[Row], statement: Statement, params: Params | None
    ) -> psycopg.AsyncCursor[Row]:
        # Rows in binary: uuids and timestamps decode from fixed-width values instead of being
        # parsed from text (40-70 us less per 50-row list page, bench/).
        await cursor.execute(statement.query, params or {}, binary=True)
        return cursor

    def _check_not_ended(self, statement: Statement) -> None:
        """Refuse a statement after the last one; mark the transaction ended at the last."""
        if self._ended:
            raise RuntimeError(f"{statement!r} follows its transaction's last statement")
        self._ended = statement.last

    async def _begin_if_due(self, cursor: psycopg.AsyncCursor[Row]) -> None:
        """Send BEGIN ahead of the first statement, once per transaction."""
        if self._pending_begin:
            self._pending_begin = False
            await cursor.execute(b"BEGIN", prepare=False)

    async def _simple(self, *statements: str) -> None:
        """Statements, with BEGIN first if still due, as one simple-protocol query."""
        if self._pending_begin:
            self._pending_begin = False
            statements = ("BEGIN", *statements)
        await self.connection.statements().execute("; ".join(statements).encode(), prepare=False)

    def _literal(self, statement: Statement, params: Params | None) -> str:
        return self.connection.literals().mogrify(statement.query, params or {})


_PING = sql("SELECT 1")


class Database:
    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 0,
        pool_timeout: float = 2.0,
        statement_timeout_ms: int = 15_000,
    ) -> None:
        self.url = conninfo(database_url)
        self._statement_timeout_ms = statement_timeout_ms
        # Connections open as demand needs them, so idle processes (a CLI command, a quiet
        # worker, a test server) do not hold pool_size connections each.
        self.pool: Pool[_Connection] = Pool(
            self._connect, max_size=pool_size + max_overflow, timeout=pool_timeout
        )

    async def _connect(self) -> _Connection:
        return await _Connection.connect(
            self.url,
            row_factory=dict_row,
            autocommit=True,  # transactions are begun explicitly, see Tx
            # Times in UTC whatever the server's zone, so every path writes them alike.
            options=f"-c statement_timeout={self._statement_timeout_ms} -c TimeZone=UTC",
            application_name="nurturehub",
            connect_timeout=5,
        )

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False, priority: bool = False) -> AsyncIterator[Tx]:
        """Check out a connection and run one transaction: commit on success, else roll back.

        With `read_only`, statements run without BEGIN and COMMIT (autocommit). For reads this
        changes nothing: at READ COMMITTED every statement takes a fresh snapshot either way, and
        it saves two round trips per call. With `priority`, the call is served before callers
        waiting without it when the pool is busy (server/pool.py).
        """
        try:
            connection = await self.pool.acquire(priority=priority)
            try:
                tx = Tx(connection, begin=not read_only)
                try:
                    yield tx
                except BaseException:
                    if tx.is_open:
                        # A failed rollback must not hide the error that caused it; the pool
                        # discards a connection it gets back broken or mid-transaction.
                        with suppress(psycopg.Error):
                            await connection.rollback()
                    raise
                if tx.is_open:
                    await connection.commit()
            finally:
                await self.pool.release(connection)
        except PoolTimeout:
            raise ServiceUnavailable(
                "Service unavailable: the database is busy (no connection was free in time), try again"
            ) from None
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict("Conflict: a record with these values already exists") from exc
        except (psycopg.errors.QueryCanceled, psycopg.errors.SerializationFailure,
                psycopg.errors.DeadlockDetected, psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _operational_error(exc) from exc

    async def ping(self) -> bool:
        try:
            async with self.transaction(read_only=True) as tx:
                return bool(await tx.scalar(_PING))
        except ServiceUnavailable:
            return False

    async def close(self) -> None:
        await self.pool.close()
