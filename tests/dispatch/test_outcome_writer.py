"""The batched outcome writer (workers/outcome_writer.py) against real SQLite and PostgreSQL:
outcomes submitted together are committed together, each caller gets its own answer, the
lease rules hold inside a batch, and what is pending is flushed although its caller gave up.
Failed flushes: test_outcome_writer_failures.py; which outcome goes first:
test_outcome_writer_priority.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.base import utcnow
from notifier.models.transition import NotificationTransition
from tests.dispatch.outcome_db import Db, counting_db, delivery, same_instant


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Db]:
    async with counting_db(db_url) as opened:
        yield opened


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
            assert same_instant(row.next_attempt_at, later)
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
