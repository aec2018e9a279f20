"""The asyncpg connection under a SQLAlchemy session, for the worker's hot path: the claim
(``dispatch``) and the outcome flush (``outcome_pg``).

Per call, SQLAlchemy's execution path (the compiled cache's look-up, parameter and result
processing, the session's begin and commit) cost more of the worker's CPU than the statements
did. These run fixed SQL text on the driver itself, which prepares each statement once per
connection and reuses the plan. SQLAlchemy keeps the pool: the session checks the connection
out in autocommit mode (it sends no BEGIN of its own), and gets it back outside any
transaction (``roll_back`` sees to that after a failure).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import asyncpg
import orjson
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


async def driver_of(session: AsyncSession) -> tuple[AsyncConnection, asyncpg.Connection]:
    """The session's connection, in autocommit mode, and the asyncpg connection under it."""
    connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
    return connection, driver


class HeldConnections:
    """A few connections the worker's hot path keeps checked out of the engine's pool, in
    autocommit mode, and hands to one caller at a time: a session's check-out and check-in
    (the pool's bookkeeping, the connection's reset, the session's own begin and close) cost
    about as much CPU per claim or flush as the statements' own Python side did.

    ``keep`` bounds how many stay held between uses (the claim and the flushes that run at a
    time); a caller beyond those gets one of its own from the pool, given back after. A
    connection that failed is not kept: ``roll_back`` invalidates a lost one, and one the
    pool would not hand out as it is (closed, or inside a transaction) goes back to it, to be
    dropped or reset. So a database restart costs each held connection one failed use, which
    the caller's retry (``db.classify``) takes as transient, and the next use checks a fresh
    one out."""

    def __init__(self, engine: AsyncEngine, *, keep: int) -> None:
        self._engine = engine
        self._keep = keep
        self._free: list[tuple[AsyncConnection, asyncpg.Connection]] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def driver(self) -> AsyncIterator[tuple[AsyncConnection, asyncpg.Connection]]:
        """A held connection (or a fresh one): the SQLAlchemy one, and asyncpg's under it."""
        held = self._free.pop() if self._free else await self._check_out()
        try:
            yield held
        finally:
            connection, driver = held
            if (
                self._closed
                or len(self._free) >= self._keep
                or connection.invalidated
                or driver.is_closed()
                or driver.is_in_transaction()
            ):
                await connection.close()  # back to the pool, which resets or drops it
            else:
                self._free.append(held)

    async def _check_out(self) -> tuple[AsyncConnection, asyncpg.Connection]:
        connection = await self._engine.connect()
        try:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
        except BaseException:
            await connection.close()
            raise
        return connection, driver

    async def aclose(self) -> None:
        """Give every held connection back to the pool; later uses check out and give back."""
        self._closed = True
        free, self._free = self._free, []
        for connection, _driver in free:
            with contextlib.suppress(Exception):  # a lost one: the pool drops it
                await connection.close()


@functools.cache
def _dialect() -> PGDialect_asyncpg:
    return PGDialect_asyncpg()  # type: ignore[no-untyped-call]


def positional(statement: ClauseElement) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """``statement`` compiled for asyncpg: its SQL text (``$1``, ``$2``…), its parameters'
    names in that order, and the values the statement fixes itself (literals it binds).
    Compile once (``functools.cache`` at the call site), run as often as needed."""
    compiled = statement.compile(dialect=_dialect())
    assert isinstance(compiled, SQLCompiler)  # a statement's, so it has positions
    return str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params)


async def roll_back(connection: AsyncConnection, driver: asyncpg.Connection) -> None:
    """After a failure on the driver's connection: roll back whatever transaction is open, or,
    if the connection cannot take even that (lost, or a query cancelled in flight), have the
    pool drop it rather than hand it out inside a transaction."""
    try:
        if not driver.is_closed() and driver.is_in_transaction():
            await driver.execute("ROLLBACK")
    except Exception:
        await connection.invalidate()
        return
    if driver.is_closed():
        await connection.invalidate()


async def after_failure(
    connection: AsyncConnection, driver: asyncpg.Connection, exc: BaseException
) -> BaseException:
    """What to raise after ``exc`` on the driver's connection: the connection rolled back or
    dropped (``roll_back``), and the error translated (``as_sqlalchemy_error``) so that the
    caller's retry (``db.classify``) reads it as it reads SQLAlchemy's own."""
    if isinstance(exc, asyncpg.InternalClientError):
        # The protocol in a state it cannot leave: the error a terminating server sends (a
        # restart, ``pg_terminate_backend``) arrived while the connection sat idle, and the
        # socket's close had not yet. Lost, as the close will say.
        await connection.invalidate()
    else:
        await roll_back(connection, driver)
    return as_sqlalchemy_error(exc, driver)


def as_sqlalchemy_error(exc: BaseException, driver: asyncpg.Connection) -> BaseException:
    """The driver's own errors as SQLAlchemy would raise them, which ``db.classify`` (every
    caller's retry decision) reads: a lost connection as an ``OperationalError``; a server
    error as a ``DBAPIError`` carrying its SQLSTATE (deadlock, shutdown…), an
    ``IntegrityError`` for a constraint (class 23). Anything else is returned as it is."""
    lost = isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | OSError,
    )
    if lost or (isinstance(exc, asyncpg.PostgresError) and driver.is_closed()):
        return sa_exc.OperationalError(None, None, exc, connection_invalidated=True)
    if isinstance(exc, asyncpg.PostgresError):
        kind = sa_exc.IntegrityError if exc.sqlstate.startswith("23") else sa_exc.DBAPIError
        return kind(None, None, exc)
    return exc


def json_rows(rows: Iterable[tuple[Any, ...]]) -> str:
    """Rows as one JSON parameter, an array of arrays (``jsonb_array_elements`` and ``->>``
    on the server): one value for the driver to encode, where arrays of columns have each of
    their elements checked by asyncpg (an abc ``isinstance`` each: 15% of a worker's CPU)."""
    # default=str: asyncpg's own UUID type, as read back from rows, which orjson does not know.
    return orjson.dumps(list(rows), default=str).decode()


_T = TypeVar("_T")


async def on_held(held: HeldConnections, run: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
    """``run`` on a held connection's driver; a failure raised as ``after_failure`` says."""
    async with held.driver() as (connection, driver):
        try:
            return await run(driver)
        except BaseException as exc:
            converted = await after_failure(connection, driver, exc)
            if converted is exc:
                raise
            raise converted from exc
