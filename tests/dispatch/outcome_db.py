"""What the outcome writer's tests (test_outcome_writer*.py) stand on: a database with leased
notifications in it, its commits counted, and ways to make its writes fail."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notifier.models.base import utcnow
from notifier.models.notification import Notification
from notifier.storage.db import create_engine, create_session_factory
from workers.outcome_writer import OutcomeWriter

WORKER = "worker-under-test"
LEASE = 10.0


@dataclass
class Db:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    commits: int = 0
    statements: list[str] = field(default_factory=list)

    def writer(self, worker_id: str = WORKER) -> OutcomeWriter:
        return OutcomeWriter(self.sessions, worker_id=worker_id, lease_seconds=LEASE)

    async def leased(
        self,
        channels: list[str],
        *,
        owner: str | None = WORKER,
        send_at: datetime | None = None,
    ) -> uuid.UUID:
        """A notification in flight: claimed by ``owner`` (None: not leased)."""
        now = utcnow()
        notification = Notification.build(
            user_id=f"u-{uuid.uuid4().hex[:6]}",
            title="t",
            message="m",
            channels=channels,
            send_at=send_at,
        )
        if owner is not None:
            notification.status = "dispatching"
            notification.lease_owner = owner
            notification.lease_expires_at = notification.next_attempt_at = now + timedelta(
                seconds=LEASE
            )
        async with self.sessions() as session, session.begin():
            session.add(notification)
        return notification.id

    async def row(self, notification_id: uuid.UUID) -> Notification:
        async with self.sessions() as session:
            query = select(Notification).where(Notification.id == notification_id)
            found = (await session.execute(query)).scalar_one()
            assert found.deliveries  # loaded (selectin) before the session closes
            return found

    @contextlib.contextmanager
    def failing(self, fails: Callable[[str, Any], BaseException | None]) -> Iterator[None]:
        """Make the database raise what ``fails(statement, parameters)`` returns, if anything,
        in place of running a statement (the seam SQLAlchemy offers: an engine event)."""

        def before(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
            error = fails(statement, parameters)
            if error is not None:
                raise error

        event.listen(self.engine.sync_engine, "before_cursor_execute", before)
        try:
            yield
        finally:
            event.remove(self.engine.sync_engine, "before_cursor_execute", before)

    @contextlib.asynccontextmanager
    async def refusing(
        self, *, notification_id: uuid.UUID | None = None, sqlstate: str, times: int = 1_000_000
    ) -> AsyncIterator[None]:
        """PostgreSQL: the server itself refuses updates of channels (of ``notification_id``,
        or any), raising ``sqlstate``, the first ``times`` times (a trigger; its count is a
        sequence, which a rollback does not undo). The flush runs on the driver's connection,
        past SQLAlchemy's events (storage/outcome_pg.py), so ``failing`` cannot reach it."""
        target = "TRUE" if notification_id is None else f"NEW.notification_id = '{notification_id}'"
        async with self.engine.begin() as connection:
            await connection.exec_driver_sql("CREATE SEQUENCE refusals")
            await connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF {target} AND nextval('refusals') <= {times} THEN "
                f"RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{sqlstate}'; "
                "END IF; RETURN NEW; END $$"
            )
            await connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON notification_deliveries "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        try:
            yield
        finally:
            async with self.engine.begin() as connection:
                await connection.exec_driver_sql("DROP TRIGGER refuse ON notification_deliveries")
                await connection.exec_driver_sql("DROP FUNCTION refuse()")
                await connection.exec_driver_sql("DROP SEQUENCE refusals")

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"


@contextlib.asynccontextmanager
async def counting_db(url: str) -> AsyncIterator[Db]:
    """A ``Db`` on ``url`` that counts commits, on SQLAlchemy's connection and on the driver's."""
    engine = create_engine(url)
    found = Db(engine, create_session_factory(engine))

    def committed(_connection: Any) -> None:
        found.commits += 1

    def driver_committed(query: Any) -> None:
        if query.query == "COMMIT":
            found.commits += 1

    def connected(dbapi_connection: Any, _record: Any) -> None:
        # On PostgreSQL the outcome flush commits on the driver's connection, past
        # SQLAlchemy's events (storage/outcome_pg.py): asyncpg's query logger sees it.
        driver = dbapi_connection.driver_connection
        if hasattr(driver, "add_query_logger"):
            driver.add_query_logger(driver_committed)

    event.listen(engine.sync_engine, "commit", committed)
    event.listen(engine.sync_engine, "connect", connected)
    try:
        yield found
    finally:
        await engine.dispose()


def delivery(notification: Notification, channel: str) -> dict[str, Any]:
    return next(d.to_dict() for d in notification.deliveries if d.channel == channel)


@contextlib.asynccontextmanager
async def as_async(manager: contextlib.AbstractContextManager[None]) -> AsyncIterator[None]:
    with manager:
        yield


def writes_channels(statement: str) -> bool:
    # SQLite's executemany UPDATE of the channels.
    return "UPDATE notification_deliveries" in statement


def mentions(parameters: Any, notification_id: uuid.UUID) -> bool:
    """Whether DB-API parameters (one row or many, values or arrays of values) carry this id,
    as either driver binds it."""
    forms = {notification_id, str(notification_id), notification_id.hex}
    rows = parameters if isinstance(parameters, list) else [parameters]
    return any(value in forms for row in rows for value in flat_values(row))


def flat_values(row: Any) -> list[Any]:
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


def same_instant(a: datetime | None, b: datetime) -> bool:
    return a is not None and abs((a - b).total_seconds()) < 0.001


async def until_backends_wait_for_a_lock(engine: AsyncEngine, flushes: int) -> None:
    """Until ``flushes`` flushes are in the database, queued behind the lock (PostgreSQL shows
    it in pg_stat_activity; there is no event to await)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(10):
        while True:
            async with engine.connect() as connection:
                if (await connection.execute(query)).scalar_one() >= flushes:
                    return
            await asyncio.sleep(0.01)
