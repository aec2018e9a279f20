"""Which outcome the writer commits first: a success is never queued behind a slow flush, nor
behind failures, retries and releases (until it is committed, a worker that dies sends that
message again)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.notification import Notification
from notifier.storage.db import create_engine, create_session_factory
from tests.dispatch.outcome_db import (
    LEASE,
    WORKER,
    Db,
    counting_db,
    delivery,
    until_backends_wait_for_a_lock,
)
from workers.outcome_writer import OutcomeWriter


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Db]:
    async with counting_db(db_url) as opened:
        yield opened


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
            await until_backends_wait_for_a_lock(engine, 1)
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
                await until_backends_wait_for_a_lock(engine, len(waiting))
            recorded = await asyncio.wait_for(
                writer.record(free, "email", ChannelChange(ChannelEvent.DELIVERED, 1)), 10
            )
            assert recorded is True
            assert delivery(await db.row(free), "email")["status"] == "delivered"
            assert not any(task.done() for task in waiting)
        assert await asyncio.wait_for(asyncio.gather(*waiting), 10) == [True, True]
    finally:
        await engine.dispose()
