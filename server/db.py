"""Database access: a pooled SQLAlchemy Core engine over psycopg, one transaction per call.

Queries are hand-written SQL constants (`sql("...")`) with bound parameters only. Handlers get a
`Tx`, a thin wrapper with `one`, `all`, `scalar` and `execute`, so that no procedure depends on
the driver's API and database failures are translated to procedure errors in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg.errors
import sqlalchemy.exc
from sqlalchemy import TextClause, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.errors import Conflict, ServiceUnavailable

__all__ = ["Database", "Tx", "async_url", "sql"]

Params = Mapping[str, Any]


def sql(statement: str) -> TextClause:
    """A hand-written statement, compiled once at import."""
    return text(statement)


def async_url(database_url: str) -> str:
    """Point a plain postgres:// URL at SQLAlchemy's psycopg 3 dialect."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError("DATABASE_URL must start with postgresql://")


def _operational_error(cause: BaseException | None) -> ServiceUnavailable | Conflict:
    if isinstance(cause, psycopg.errors.QueryCanceled):
        return ServiceUnavailable("Service unavailable: the query took too long")
    if isinstance(cause, (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)):
        return Conflict("Conflict: a concurrent change got there first, try again")
    return ServiceUnavailable("Service unavailable: the database cannot be reached")


class Tx:
    """One open transaction on one pooled connection."""

    __slots__ = ("connection",)

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def one(self, statement: TextClause, params: Params | None = None) -> RowMapping | None:
        result = await self.connection.execute(statement, params or {})
        return result.mappings().first()

    async def all(self, statement: TextClause, params: Params | None = None) -> Sequence[RowMapping]:
        result = await self.connection.execute(statement, params or {})
        return result.mappings().all()

    async def scalar(self, statement: TextClause, params: Params | None = None) -> Any:
        result = await self.connection.execute(statement, params or {})
        return result.scalar()

    async def run_script(self, script: str) -> None:
        """Run a multi-statement SQL script (no parameters), such as schema.sql."""
        raw = await self.connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute(script)

    async def execute(self, statement: TextClause, params: Params | None = None) -> int:
        """Run a statement; returns the number of rows it touched."""
        result = await self.connection.execute(statement, params or {})
        return result.rowcount


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
        self.engine: AsyncEngine = create_async_engine(
            async_url(database_url),
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_pre_ping=False,
            # Bound values never reach exception text, and so never reach a log.
            hide_parameters=True,
            connect_args={
                "options": f"-c statement_timeout={statement_timeout_ms}",
                "application_name": "nurturehub",
                "connect_timeout": 5,
            },
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """Check out a connection and run one transaction: commit on success, else roll back."""
        try:
            async with self.engine.begin() as connection:
                yield Tx(connection)
        except sqlalchemy.exc.TimeoutError:
            raise ServiceUnavailable(
                "Service unavailable: all database connections are busy, try again shortly"
            ) from None
        except sqlalchemy.exc.IntegrityError as exc:
            if isinstance(exc.orig, psycopg.errors.UniqueViolation):
                raise Conflict("Conflict: a record with these values already exists") from exc
            raise
        except (sqlalchemy.exc.InterfaceError, sqlalchemy.exc.OperationalError) as exc:
            raise _operational_error(exc.orig) from exc

    async def ping(self) -> bool:
        try:
            async with self.transaction() as tx:
                return bool(await tx.scalar(sql("SELECT 1")))
        except ServiceUnavailable:
            return False

    async def close(self) -> None:
        await self.engine.dispose()
