"""``storage/transitions.py``: what a change through the machine records (the latency rule,
the settled row), the rows ``record_transitions`` writes on each backend, and the housekeeping
that prunes the history."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from notifier.lifecycle.machine import ChannelChange, ChannelEvent, Transition
from notifier.models.base import utcnow
from notifier.models.transition import NotificationTransition
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.transitions import (
    TransitionRecord,
    advance_channel,
    prune_transitions,
    read_record,
    record_transitions,
    summarize_notification,
)


def _sent(notification_id: uuid.UUID, age: timedelta) -> TransitionRecord:
    transition = Transition("channel.sent", "email", "pending", "sent")
    return TransitionRecord(
        notification_id, "u", transition, utcnow() - age, attempts=1, latency_ms=12
    )


async def test_record_then_prune(db_url: str) -> None:
    engine = create_engine(db_url)
    old, new = uuid.uuid4(), uuid.uuid4()
    read = read_record(new, "u", utcnow())
    assert read is not None and read_record(new, "u", utcnow(), was_read=True) is None
    try:
        async with engine.begin() as connection:
            # No endpoint subscribes: the rows are written, no webhook delivery is.
            created = await record_transitions(
                connection, [_sent(old, timedelta(days=8)), _sent(new, timedelta(0)), read]
            )
        assert created == 0
        async with create_session_factory(engine)() as session:
            before = utcnow() - timedelta(days=7)
            assert await prune_transitions(session, older_than=before, chunk=1) == 1
            rows = (
                await session.execute(
                    select(
                        NotificationTransition.notification_id,
                        NotificationTransition.kind,
                        NotificationTransition.channel,
                        NotificationTransition.attempts,
                        NotificationTransition.latency_ms,
                    ).order_by(NotificationTransition.kind)
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [
        (new, "channel.sent", "email", 1, 12),
        (new, "notification.read", None, None, None),
    ]


@dataclass
class _Channel:
    channel: str
    status: str
    attempts: int = 0
    last_error: str | None = None
    provider_id: str | None = None
    unknown_outcomes: int = 0
    next_attempt_at: datetime | None = None
    updated_at: datetime = field(default_factory=utcnow)


@dataclass
class _Notification:
    deliveries: list[_Channel]
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    user_id: str = "u"
    send_at: datetime | None = None
    created_at: datetime = field(default_factory=lambda: utcnow() - timedelta(seconds=2))
    status: str = "dispatching"
    retry_count: int = 0
    updated_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None


@pytest.mark.parametrize(
    ("before", "event", "latency"),
    [
        ("pending", ChannelEvent.SENT, True),  # the first success: what the user waited for
        ("retrying", ChannelEvent.DELIVERED, True),
        ("failed", ChannelEvent.SENT, True),  # a late success over a channel given up
        ("sent", ChannelEvent.ACKED, False),  # confirmed later: not a first success
        ("pending", ChannelEvent.FAILED, False),
    ],
)
def test_latency_only_on_a_first_success(before: str, event: ChannelEvent, latency: bool) -> None:
    notification = _Notification([_Channel("email", before)])
    records: list[TransitionRecord] = []
    now = utcnow()
    advance_channel(notification, notification.deliveries[0], ChannelChange(event, 1), now, records)
    summarize_notification(notification, now, records, leased=False)
    [channel, *settled] = records
    assert channel.transition.from_status == before
    assert channel.attempts == 1
    assert (channel.latency_ms is not None) == latency
    if latency:
        assert 2000 <= (channel.latency_ms or 0) < 60_000  # from created_at, 2 s ago
    # A finished notification is settled once, with the API's delivery_status.
    [done] = settled
    assert done.transition.kind == "notification.settled"
    assert done.delivery_status is not None
    assert done.delivery_status["email"]["status"] == notification.deliveries[0].status


def test_a_refused_event_records_nothing() -> None:
    notification = _Notification([_Channel("email", "delivered")])
    records: list[TransitionRecord] = []
    change = ChannelChange(ChannelEvent.CANCELLED)
    step = advance_channel(notification, notification.deliveries[0], change, utcnow(), records)
    assert not step.applied and records == []
