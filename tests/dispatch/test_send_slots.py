"""A send slot is given back when the channel's outcome is known, not when it is committed.

With one slot, a notification whose outcome the database is slow to record must not hold up
the next one: the worker sends the next while the first one's record waits. Here the first
one's channel row is locked by another connection (the record's UPDATE waits for it) and the
second must still go out; once the lock goes, both are recorded ``delivered``.

PostgreSQL only: on SQLite the lock that would hold the record (the database's write lock) holds
the claim of the next notification too, so there is nothing to overlap.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from notifier.realtime.fanout import asyncpg_dsn
from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer


@contextlib.asynccontextmanager
async def channel_row_locked(database_url: str, notification_id: str) -> AsyncIterator[None]:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with connection.transaction():
            await connection.execute(
                "SELECT 1 FROM notification_deliveries WHERE notification_id = $1 FOR UPDATE",
                uuid.UUID(notification_id),
            )
            yield
    finally:
        await connection.close()


async def test_next_notification_is_sent_while_the_last_outcome_waits(
    fresh_pg_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with running_stack(fresh_pg_url, worker=False, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="slots@example.com")
        first = await stack.notify(user_id=user, title="first", message="m", channels=["email"])
        async with contextlib.AsyncExitStack() as lock:
            # Taken before the worker starts, let go before it stops (its drain waits for
            # the records it holds).
            await lock.enter_async_context(channel_row_locked(fresh_pg_url, first["id"]))
            async with stack.worker(worker_concurrency=1, worker_batch_size=1):
                await smtp_peer.wait_for_accepted(1)
                second = await stack.notify(
                    user_id=user, title="second", message="m", channels=["email"]
                )
                # Sent with the only slot while the first one's record still waits.
                await smtp_peer.wait_for_accepted(2)
                held = await stack.get(first["id"])
                assert held["delivery_status"]["email"]["status"] == "pending", held
                await lock.aclose()
                for created in (first, second):
                    settled = await stack.wait_settled(created["id"])
                    assert settled["delivery_status"]["email"]["status"] == "delivered", settled
    subjects = sorted(str(m.message["Subject"]) for m in smtp_peer.messages)
    assert subjects == ["first", "second"]
