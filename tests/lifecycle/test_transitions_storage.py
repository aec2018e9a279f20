"""``storage/transitions.py`` on each backend: the rows ``record_transitions`` writes (one
INSERT for a batch), and the housekeeping that prunes the history."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from notifier.lifecycle.machine import Transition
from notifier.models.base import utcnow
from notifier.models.transition import NotificationTransition
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.transitions import (
    TransitionRecord,
    prune_transitions,
    read_record,
    record_transitions,
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
