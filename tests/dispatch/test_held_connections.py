"""The worker's held connections (``notifier/storage/driver.py`` ``HeldConnections``) against a
real PostgreSQL: the claim and the outcome flush reuse one connection instead of checking one
out per call, and a connection the server dropped costs one failed call, which the worker's
retry takes as transient (``storage/db.py`` ``classify``); the next call gets a fresh one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.notification import Notification
from notifier.storage.db import create_engine, create_session_factory, is_transient
from notifier.storage.dispatch import ClaimedWork, claim_due
from notifier.storage.driver import HeldConnections
from notifier.storage.outcome_batch import ChannelOutcome, record_outcomes

pytestmark = pytest.mark.postgres

WORKER = "worker-holding"


@dataclass
class Db:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    held: HeldConnections

    async def due(self) -> uuid.UUID:
        notification = Notification.build(
            user_id=f"u-{uuid.uuid4().hex[:6]}", title="t", message="m", channels=["websocket"]
        )
        async with self.sessions() as session, session.begin():
            session.add(notification)
        return notification.id

    async def claim(self) -> list[ClaimedWork]:
        return await claim_due(
            self.sessions, worker_id=WORKER, batch_size=10, lease_seconds=30, held=self.held
        )

    async def held_pid(self) -> int:
        async with self.held.driver() as (_connection, driver):
            return driver.get_server_pid()

    async def status(self, notification_id: uuid.UUID) -> str:
        async with self.sessions() as session:
            query = select(Notification.status).where(Notification.id == notification_id)
            return str((await session.execute(query)).scalar_one())


@pytest.fixture
async def db(fresh_pg_url: str) -> AsyncIterator[Db]:
    engine = create_engine(fresh_pg_url, pre_ping=False)
    held = HeldConnections(engine, keep=1)
    try:
        yield Db(engine, create_session_factory(engine), held)
    finally:
        await held.aclose()
        await engine.dispose()


async def test_claim_and_flush_run_on_the_one_held_connection(db: Db) -> None:
    pid = await db.held_pid()
    notification_id = await db.due()

    [work] = await db.claim()
    assert work.notification.id == notification_id
    change = ChannelChange(ChannelEvent.DELIVERED, attempts=1)
    outcome = ChannelOutcome(notification_id, "websocket", change, release=True)
    assert await record_outcomes(db.sessions, [outcome], worker_id=WORKER, held=db.held) == [True]

    assert await db.status(notification_id) == "delivered"
    assert await db.held_pid() == pid  # kept between calls, not checked in and out


async def test_a_connection_the_server_dropped_fails_one_claim_then_is_replaced(db: Db) -> None:
    pid = await db.held_pid()
    async with db.engine.connect() as admin:  # another connection of the pool
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    notification_id = await db.due()

    with pytest.raises(sa_exc.OperationalError) as failed:
        await db.claim()
    assert is_transient(failed.value)  # the dispatcher's loop claims again

    [work] = await db.claim()
    assert work.notification.id == notification_id
    assert await db.held_pid() != pid
