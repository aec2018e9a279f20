"""The batched outcome writer (workers/outcome_writer.py) against real SQLite and PostgreSQL:
outcomes submitted together are committed together, each caller gets its own answer, the
lease rules hold inside a batch, and a failed flush is retried (whole, or item by item)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.base import utcnow
from notifier.models.notification import Notification
from notifier.models.transition import NotificationTransition
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.outcome_batch import ChannelOutcome
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


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Db]:
    engine = create_engine(db_url)
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


async def test_outcomes_submitted_together_are_committed_together(db: Db) -> None:
    ids = [await db.leased(["email"]) for _ in range(60)]
    later = utcnow() + timedelta(minutes=5)
    changes = {
        0: ChannelChange(ChannelEvent.DELIVERED, attempts=1, provider_id="p-0"),
        1: ChannelChange(ChannelEvent.RETRY, attempts=2, last_error="451", next_attempt_at=later),
        2: ChannelChange(ChannelEvent.FAILED, attempts=1, last_error="550 no such user"),
    }
    writer = db.writer()
    commits_before = db.commits

    results = await asyncio.gather(
        *(writer.record(i, "email", changes[n % 3], release=True) for n, i in enumerate(ids))
    )

    assert results == [True] * len(ids)
    # One transaction for the lot: every record was pending before the first flush began.
    assert db.commits - commits_before == 1
    for n, notification_id in enumerate(ids):
        row = await db.row(notification_id)
        email = delivery(row, "email")
        assert row.lease_owner is None and row.lease_expires_at is None
        if n % 3 == 0:
            assert (row.status, email["status"], email["provider_id"]) == (
                "delivered",
                "delivered",
                "p-0",
            )
            assert row.next_attempt_at is None
        elif n % 3 == 1:
            assert (row.status, email["status"], email["attempts"]) == ("retrying", "retrying", 2)
            assert row.retry_count == 1
            assert _same_instant(row.next_attempt_at, later)
        else:
            assert (row.status, email["status"], email["last_error"]) == (
                "failed",
                "failed",
                "550 no such user",
            )
            assert row.next_attempt_at is None


async def test_channels_of_one_notification_in_one_batch(db: Db) -> None:
    notification_id = await db.leased(["email", "websocket", "sms"])
    writer = db.writer()

    recorded = await asyncio.gather(
        writer.record(notification_id, "email", ChannelChange(ChannelEvent.DELIVERED, 1)),
        writer.record(notification_id, "websocket", ChannelChange(ChannelEvent.SENT, 1)),
        writer.record(
            notification_id, "sms", ChannelChange(ChannelEvent.FAILED, 3, last_error="gone")
        ),
        writer.release(notification_id),
    )

    assert recorded == [True, True, True, True]
    row = await db.row(notification_id)
    assert [delivery(row, c)["status"] for c in ("email", "sms", "websocket")] == [
        "delivered",
        "failed",
        "sent",
    ]
    assert (row.status, row.retry_count, row.lease_owner, row.next_attempt_at) == (
        "partially_failed",
        2,
        None,
        None,
    )


async def test_a_success_long_after_send_at_records_its_latency_clamped(db: Db) -> None:
    # Due two years ago (restored from a backup, say): the wait in ms is past an int4, which
    # PostgreSQL refused, failing the whole batch, so the sent message was sent again.
    overdue = await db.leased(["email"], send_at=utcnow() - timedelta(days=730))
    on_time = await db.leased(["email"])
    writer = db.writer()

    recorded = await asyncio.gather(
        *(
            writer.record(n, "email", ChannelChange(ChannelEvent.SENT, 1), release=True)
            for n in (overdue, on_time)
        )
    )

    assert recorded == [True, True]
    async with db.sessions() as session:
        latencies = dict(
            (
                await session.execute(
                    select(
                        NotificationTransition.notification_id, NotificationTransition.latency_ms
                    )
                    .where(NotificationTransition.notification_id.in_([overdue, on_time]))
                    .where(NotificationTransition.kind == "channel.sent")
                )
            ).all()
        )
    assert latencies[overdue] == 2**31 - 1  # the column's largest value
    assert 0 <= (latencies[on_time] or 0) < 60_000
    assert delivery(await db.row(overdue), "email")["status"] == "sent"


async def test_a_lease_taken_over_refuses_failures_but_not_successes(db: Db) -> None:
    taken = await db.leased(["email", "websocket"], owner="another-worker")
    writer = db.writer()

    failure, success, release = await asyncio.gather(
        writer.record(taken, "email", ChannelChange(ChannelEvent.RETRY, 1, last_error="x")),
        writer.record(taken, "websocket", ChannelChange(ChannelEvent.SENT, 1), release=True),
        writer.release(taken),
    )

    # The failure and the release would overwrite the new holder's state; the success must be
    # recorded, or the new holder sends the message a second time.
    assert (failure, success, release) == (False, True, False)
    row = await db.row(taken)
    assert delivery(row, "email")["status"] == "pending"
    assert delivery(row, "websocket")["status"] == "sent"
    assert (row.lease_owner, row.status) == ("another-worker", "dispatching")


async def test_a_transient_error_retries_the_whole_flush(db: Db) -> None:
    ids = [await db.leased(["email"]) for _ in range(5)]
    writer = db.writer()
    failures = iter([sa_exc.OperationalError("UPDATE …", None, ConnectionResetError())])

    def once(statement: str, _parameters: Any) -> BaseException | None:
        return next(failures, None) if _writes_channels(statement) else None

    # A serialization failure, once: a lost race, which the flush runs again.
    async with (
        db.refusing(sqlstate="40001", times=1) if db.is_postgres else _sync(db.failing(once))
    ):
        results = await asyncio.gather(
            *(
                writer.record(i, "email", ChannelChange(ChannelEvent.DELIVERED, 1), release=True)
                for i in ids
            )
        )

    assert results == [True] * 5
    for notification_id in ids:
        row = await db.row(notification_id)
        # Written once: the failed attempt was rolled back, not half-applied.
        assert (row.status, delivery(row, "email")["attempts"]) == ("delivered", 1)


async def test_a_bad_item_fails_alone(db: Db) -> None:
    good = [await db.leased(["email"]) for _ in range(3)]
    bad = await db.leased(["email"])
    writer = db.writer()

    def on_bad(statement: str, parameters: Any) -> BaseException | None:
        if _writes_channels(statement) and _mentions(parameters, bad):
            return sa_exc.IntegrityError(statement, None, ValueError("refused"))
        return None

    # A check violation from the server (PostgreSQL), as a bad value would raise.
    async with (
        db.refusing(notification_id=bad, sqlstate="23514")
        if db.is_postgres
        else _sync(db.failing(on_bad))
    ):
        results = await asyncio.gather(
            *(
                writer.record(i, "email", ChannelChange(ChannelEvent.DELIVERED, 1), release=True)
                for i in [*good, bad]
            ),
            return_exceptions=True,
        )

    assert results[:3] == [True, True, True]
    assert isinstance(results[3], sa_exc.IntegrityError)
    for notification_id in good:
        assert (await db.row(notification_id)).status == "delivered"
    unrecorded = await db.row(bad)
    assert (unrecorded.status, unrecorded.lease_owner) == ("dispatching", WORKER)


async def test_a_bad_item_of_a_group_fails_alone_and_keeps_its_lease(db: Db) -> None:
    """``record_many`` (a claimed batch's outcomes, one caller): the bad item's notification
    keeps its lease, its later outcomes (the release with them) are not written; the others'
    are recorded and released."""
    good = [await db.leased(["email", "websocket"]) for _ in range(2)]
    bad = await db.leased(["email", "websocket"])
    writer = db.writer()

    def on_bad(statement: str, parameters: Any) -> BaseException | None:
        if _writes_channels(statement) and _mentions(parameters, bad):
            return sa_exc.IntegrityError(statement, None, ValueError("refused"))
        return None

    def outcomes(notification_id: uuid.UUID) -> list[ChannelOutcome]:
        sent = ChannelChange(ChannelEvent.SENT, 1)
        return [
            ChannelOutcome(notification_id, "email", ChannelChange(ChannelEvent.DELIVERED, 1)),
            ChannelOutcome(notification_id, "websocket", sent, release=True),
        ]

    async with (
        db.refusing(notification_id=bad, sqlstate="23514")
        if db.is_postgres
        else _sync(db.failing(on_bad))
    ):
        results = await writer.record_many([*outcomes(good[0]), *outcomes(bad), *outcomes(good[1])])

    assert results[:2] == [True, True] and results[4:] == [True, True]
    assert all(isinstance(result, Exception) for result in results[2:4])
    for notification_id in good:
        row = await db.row(notification_id)
        assert (row.status, row.lease_owner) == ("delivered", None)
    unrecorded = await db.row(bad)
    assert (unrecorded.status, unrecorded.lease_owner) == ("dispatching", WORKER)
    assert {d.status for d in unrecorded.deliveries} == {"pending"}


async def test_flushed_waits_for_what_is_pending_even_if_its_caller_gave_up(db: Db) -> None:
    ids = [await db.leased(["websocket"]) for _ in range(3)]
    writer = db.writer()
    records = [
        asyncio.create_task(writer.record(i, "websocket", ChannelChange(ChannelEvent.SENT, 1)))
        for i in ids
    ]

    async def stop() -> None:
        # Tasks start in the order they were created: every record is submitted by now.
        records[0].cancel()  # as the dispatcher's drain cancels what did not finish
        await writer.flushed()

    await asyncio.create_task(stop())

    # The message went out: its outcome is recorded although nobody waits for the answer.
    for notification_id in ids:
        assert delivery(await db.row(notification_id), "websocket")["status"] == "sent"
    assert records[0].cancelled()
    assert await asyncio.gather(*records[1:]) == [True, True]


@contextlib.asynccontextmanager
async def _sync(manager: contextlib.AbstractContextManager[None]) -> AsyncIterator[None]:
    with manager:
        yield


def _writes_channels(statement: str) -> bool:
    # SQLite's executemany UPDATE of the channels.
    return "UPDATE notification_deliveries" in statement


def _mentions(parameters: Any, notification_id: uuid.UUID) -> bool:
    """Whether DB-API parameters (one row or many, values or arrays of values) carry this id,
    as either driver binds it."""
    forms = {notification_id, str(notification_id), notification_id.hex}
    rows = parameters if isinstance(parameters, list) else [parameters]
    return any(value in forms for row in rows for value in _flat(row))


def _flat(row: Any) -> list[Any]:
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


def _same_instant(a: datetime | None, b: datetime) -> bool:
    return a is not None and abs((a - b).total_seconds()) < 0.001


@pytest.mark.postgres
async def test_an_outcome_does_not_wait_for_a_flush_held_by_a_lock(fresh_pg_url: str) -> None:
    """A second flush runs beside a slow one: here the first is held by another connection's
    lock on its row, and an outcome submitted after it is still committed at once (with one
    flush at a time it would wait for the lock). PostgreSQL only: SQLite's writers take turns
    by design, and its writer flushes one batch at a time."""
    engine = create_engine(fresh_pg_url)
    db = Db(engine, create_session_factory(engine))
    try:
        held, free = await db.leased(["email"]), await db.leased(["email"])
        writer = db.writer()
        async with engine.connect() as locker, locker.begin():
            await locker.execute(
                select(Notification.id).where(Notification.id == held).with_for_update()
            )
            waiting = asyncio.create_task(
                writer.record(held, "email", ChannelChange(ChannelEvent.DELIVERED, 1))
            )
            await _until_backends_wait_for_a_lock(engine, 1)
            recorded = await asyncio.wait_for(
                writer.record(free, "email", ChannelChange(ChannelEvent.DELIVERED, 1)), 10
            )
            assert recorded is True
            assert delivery(await db.row(free), "email")["status"] == "delivered"
            assert not waiting.done()
        assert await asyncio.wait_for(waiting, 10) is True
        assert delivery(await db.row(held), "email")["status"] == "delivered"
    finally:
        await engine.dispose()


async def _until_backends_wait_for_a_lock(engine: AsyncEngine, flushes: int) -> None:
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


async def test_a_success_goes_in_the_next_flush_ahead_of_other_outcomes(db: Db) -> None:
    """Until a success is committed, a worker that dies sends that message again: it must not
    queue behind failures, retries and lease releases. Five outcomes, two per flush, one flush
    at a time; the success, submitted last, is committed by the first flush."""
    ids = [await db.leased(["email"]) for _ in range(5)]
    writer = OutcomeWriter(
        db.sessions, worker_id=WORKER, lease_seconds=LEASE, max_batch=2, concurrency=1
    )
    commits_before = db.commits
    committed_after: dict[str, int] = {}

    async def record(name: str, notification_id: uuid.UUID, change: ChannelChange) -> None:
        assert await writer.record(notification_id, "email", change, release=True)
        committed_after[name] = db.commits - commits_before

    failed = ChannelChange(ChannelEvent.FAILED, 1, last_error="550")
    await asyncio.gather(
        *(record(f"failure {n}", i, failed) for n, i in enumerate(ids[:4])),
        record("success", ids[4], ChannelChange(ChannelEvent.DELIVERED, 1)),
    )

    assert committed_after["success"] == 1
    assert sorted(committed_after.values()) == [1, 1, 2, 2, 3]


@pytest.mark.postgres
async def test_a_success_does_not_wait_for_flushes_of_failures(fresh_pg_url: str) -> None:
    """Both flushes are in the database, each held by another connection's lock, and hold only
    failures: a success submitted then is committed at once, in a flush of its own."""
    engine = create_engine(fresh_pg_url)
    db = Db(engine, create_session_factory(engine))
    try:
        held = [await db.leased(["email"]), await db.leased(["email"])]
        free = await db.leased(["email"])
        writer = db.writer()
        failed = ChannelChange(ChannelEvent.FAILED, 1, last_error="550")
        async with engine.connect() as locker, locker.begin():
            waiting = []
            for notification_id in held:  # one flush each: the second starts while the first
                await locker.execute(  # waits for its lock
                    select(Notification.id)
                    .where(Notification.id == notification_id)
                    .with_for_update()
                )
                waiting.append(asyncio.create_task(writer.record(notification_id, "email", failed)))
                await _until_backends_wait_for_a_lock(engine, len(waiting))
            recorded = await asyncio.wait_for(
                writer.record(free, "email", ChannelChange(ChannelEvent.DELIVERED, 1)), 10
            )
            assert recorded is True
            assert delivery(await db.row(free), "email")["status"] == "delivered"
            assert not any(task.done() for task in waiting)
        assert await asyncio.wait_for(asyncio.gather(*waiting), 10) == [True, True]
    finally:
        await engine.dispose()
