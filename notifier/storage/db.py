"""Engine and session factory, built from settings (never at import time)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, any_, bindparam, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.pool import ConnectionPoolEntry


def create_engine(
    database_url: str, *, pool_size: int = 10, echo: bool = False, pre_ping: bool = True
) -> AsyncEngine:
    """``pre_ping`` checks each pooled connection with a round trip before handing it out, so a
    connection that died with a database restart is replaced instead of failing a request. A
    caller that retries transient errors itself (the worker) can do without it: the first
    failure after a restart invalidates the whole pool, and the retry gets a fresh connection."""
    if database_url.startswith("sqlite"):
        engine = create_async_engine(
            database_url,
            echo=echo,
            # Writers queue on SQLite's single lock instead of failing with "database is locked".
            connect_args={"timeout": 30},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_async_engine(
        database_url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_timeout=10,
        connect_args={"timeout": 5, "command_timeout": 30},
    )


def _sqlite_on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event open transactions itself (see below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while the in-process worker writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Take SQLite's write lock when a transaction starts, not at its first write: two
    # read-modify-write transactions (an outcome being recorded while an ack arrives) then queue
    # one after the other instead of one failing with a stale snapshot. This is SQLite's
    # stand-in for PostgreSQL's SELECT ... FOR UPDATE, which SQLite does not have.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_one_of(
    column: ColumnElement[Any] | QueryableAttribute[Any], name: str, dialect: str
) -> ColumnElement[bool]:
    """``column IN (…)``, the list bound at execution as parameter ``name``.

    On PostgreSQL ``column = ANY(:name)``: the list travels as one array parameter, so the SQL
    is the same whatever its length. An expanding ``IN`` renders one placeholder per item, and
    SQLAlchemy renders it again on every execution: 9% of a no-op worker's CPU, for the three
    such statements of each claim and outcome flush (bench/RESULTS.md). SQLite has no arrays:
    there it is the expanding ``IN``.
    """
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


class DbErrorKind(StrEnum):
    """What a database error says about trying again: the one classification every caller uses
    (the API's 503, the worker's retries, the batchers' failure policies)."""

    # The database cannot serve us right now (down, restarting, connection lost, out of
    # connections): the same request may succeed later; retrying it now mostly waits.
    UNAVAILABLE = "unavailable"
    # The transaction lost a race (serialization failure, deadlock): run it again at once.
    CONFLICT = "conflict"
    # What was asked is wrong (a constraint, bad data, a bug): it fails the same way again.
    REQUEST = "request"


# SQLSTATEs that mean UNAVAILABLE: connection exceptions (08), insufficient resources (53: too
# many connections, disk full), operator intervention (57P: admin shutdown, crash shutdown, "the
# database system is starting up"), the database itself gone (3D000) and a login the server
# refuses (28). asyncpg reports these while connecting as a plain DBAPIError, neither an
# OperationalError nor a disconnect.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "3D000", "28")
# SQLSTATEs that mean CONFLICT: serialization failure and deadlock detected.
_CONFLICT_SQLSTATES = ("40001", "40P01")


def _sqlstate(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str) and state:
            return state
        current = getattr(current, "orig", None) or current.__cause__
    return None


def classify(exc: BaseException) -> DbErrorKind:
    """What ``exc``, raised by a database call, says about trying again (``DbErrorKind``)."""
    state = _sqlstate(exc)
    if state is not None and state.startswith(_CONFLICT_SQLSTATES):
        return DbErrorKind.CONFLICT
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.ProgrammingError):
        return DbErrorKind.REQUEST
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return DbErrorKind.UNAVAILABLE
        if state is not None and state.startswith(_UNAVAILABLE_SQLSTATES):
            return DbErrorKind.UNAVAILABLE
        return DbErrorKind.REQUEST
    if isinstance(
        exc, sa_exc.TimeoutError | sa_exc.DisconnectionError | ConnectionError | TimeoutError
    ) or (isinstance(exc, OSError) and exc.errno is not None):
        return DbErrorKind.UNAVAILABLE
    return DbErrorKind.REQUEST


def is_database_unavailable(exc: BaseException) -> bool:
    """True for failures to reach the database, as opposed to errors in what was asked of it
    (or lost races, which a caller without a retry of its own reports as it does any error)."""
    return classify(exc) is DbErrorKind.UNAVAILABLE


def is_transient(exc: BaseException) -> bool:
    """True when running the same transaction again may succeed: unavailable or a lost race."""
    return classify(exc) is not DbErrorKind.REQUEST
