"""On PostgreSQL the channel events of recorded transitions are built by the recording
statement itself (``storage/transitions.py``, ``_CHANNEL_EVENTS_SQL``), not in Python. Their
stored ``data`` must be exactly what the Python constructor's JSON stores: the webhook body a
receiver gets is that text (``webhooks.events.envelope_body``), so equal text means equal bytes.
Checked against the real server, with values that stress JSON (quotes, backslashes, control
characters, non-ASCII, None), in a transaction rolled back at the end."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text, update

from notifier.lifecycle.machine import ChannelChange, ChannelEvent, Transition
from notifier.models.base import utcnow
from notifier.models.notification import Notification, NotificationDelivery
from notifier.models.webhook import WebhookEndpoint
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.outcome_batch import ChannelOutcome, record_outcomes
from notifier.storage.transitions import (
    TransitionRecord,
    delivery_status,
    read_record,
    record_transitions,
)
from tests.dispatch.conftest import fresh_pg_url

__all__ = ["fresh_pg_url"]  # a fixture, shared with tests/dispatch
from notifier.webhooks import events as webhook_events
from notifier.webhooks.events import envelope_body

pytestmark = pytest.mark.postgres

AWKWARD = 'a "quoted" \\ back\\slash\n\ttab \x01 é 日本 😀 </script> \u2028'


def _records() -> list[TransitionRecord]:
    now = utcnow()
    n1, n2 = uuid.uuid4(), uuid.uuid4()

    def channel(n: uuid.UUID, to: str, **facts: object) -> TransitionRecord:
        transition = Transition(f"channel.{to}", "email", "pending", to)
        return TransitionRecord(n, "user-é", transition, now, **facts)  # type: ignore[arg-type]

    read = read_record(n2, "user-é", now + timedelta(microseconds=1))
    assert read is not None
    return [
        channel(n1, "sent", attempts=1, latency_ms=5, provider_id="relay-1 <id@x>"),
        channel(n1, "delivered", attempts=1, provider_id=AWKWARD),
        channel(n2, "failed", attempts=3, last_error=AWKWARD),
        channel(n2, "skipped", attempts=None),  # attempts null: the event says 0
        channel(n2, "retrying", attempts=2, last_error="x"),  # no event of its own
        TransitionRecord(
            n1,
            "user-é",
            Transition("notification.settled", None, "dispatching", "delivered"),
            now,
            delivery_status={"email": {"status": "delivered", "attempts": 1, "last_error": None}},
        ),
        read,
    ]


def _expected(record: TransitionRecord) -> webhook_events.WebhookEvent | None:
    """The event as the Python constructors build it (what the SQLite path stores)."""
    t = record.transition
    if t.channel is None:
        return None  # notification-level events are still built in Python: not under test
    return webhook_events.channel_event(
        notification_id=record.notification_id,
        user_id=record.user_id,
        channel=t.channel,
        status=t.to_status,
        attempts=record.attempts or 0,
        last_error=record.last_error,
        provider_id=record.provider_id,
        at=record.occurred_at,
    )


async def test_channel_events_built_in_sql_store_the_python_json(pg_url: str) -> None:
    engine = create_engine(pg_url)
    records = _records()
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            try:
                await connection.execute(
                    insert(WebhookEndpoint),
                    [{"url": "https://receiver.test/hook", "events": ["*"], "secret": b"k" * 32}],
                )
                created = await record_transitions(connection, records)
                rows = (
                    await connection.execute(
                        text("SELECT id, type, data::text, created_at FROM webhook_events")
                    )
                ).all()
                expected = []
                for record in records:
                    event = _expected(record)
                    if event is None:
                        continue
                    stored = (
                        await connection.execute(
                            text("SELECT CAST(CAST(:j AS text) AS jsonb)::text"),
                            {"j": json.dumps(event.data)},
                        )
                    ).scalar_one()
                    expected.append((event.type.value, stored, event.created_at))
            finally:
                await transaction.rollback()
    finally:
        await engine.dispose()
    # sent, delivered, failed, skipped + settled + read: one delivery each to the endpoint.
    assert created == 6
    channel_rows = sorted(
        (r[1], r[2], r[3])
        for r in rows
        if r[1] not in ("notification.settled", "notification.read")
    )
    assert channel_rows == sorted(expected)
    assert {r[1] for r in rows} >= {"notification.settled", "notification.read"}
    # What a receiver gets is built from the stored text: the same bytes.
    by_type = {r[1]: r for r in rows}
    failed = by_type["notification.failed"]
    body = json.loads(envelope_body(failed[0], failed[1], failed[3], failed[2]))
    assert body["data"]["last_error"] == AWKWARD
    assert body["data"]["attempts"] == 3
    assert json.loads(by_type["notification.skipped"][2])["attempts"] == 0


async def test_settled_event_built_in_sql_stores_the_python_json(fresh_pg_url: str) -> None:
    """The outcome batch builds ``notification.settled`` in its write-back statement
    (``storage/outcome_pg.py``), from the channels it wrote and the ones it did not: the stored
    ``data`` is what the Python constructor's JSON stores for the channels as committed."""
    engine = create_engine(fresh_pg_url)
    sessions = create_session_factory(engine)
    try:
        now = utcnow()
        notification = Notification.build(
            user_id="user-é", title="t", message="m", channels=["email", "sms", "websocket"]
        )
        notification.status = "dispatching"
        notification.lease_owner = "w"
        notification.lease_expires_at = notification.next_attempt_at = now + timedelta(minutes=1)
        async with sessions() as session, session.begin():
            session.add(WebhookEndpoint(url="https://r.test/h", events=["*"], secret=b"k" * 32))
            session.add(notification)
        async with engine.begin() as connection:  # channels settled before this batch
            await connection.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.notification_id == notification.id)
                .where(NotificationDelivery.channel == "sms")
                .values(
                    status="failed",
                    attempts=3,
                    last_error=AWKWARD,
                    updated_at=now.replace(microsecond=0),  # isoformat without a fraction
                )
            )
            await connection.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.notification_id == notification.id)
                .where(NotificationDelivery.channel == "websocket")
                .values(status="sent", attempts=1, provider_id=AWKWARD)
            )

        change = ChannelChange(ChannelEvent.DELIVERED, 1, provider_id='relay "1" é')
        item = ChannelOutcome(notification.id, "email", change, release=True)
        assert await record_outcomes(sessions, [item], worker_id="w") == [True]

        async with sessions() as session:
            row = (
                await session.execute(
                    select(Notification).where(Notification.id == notification.id)
                )
            ).scalar_one()
            stored = (
                await session.execute(
                    text("SELECT data::text FROM webhook_events WHERE type = :t"),
                    {"t": "notification.settled"},
                )
            ).scalar_one()
            expected_event = webhook_events.notification_settled(
                notification_id=row.id,
                user_id=row.user_id,
                status=row.status,
                delivery_status=delivery_status(row.deliveries),
            )
            expected = (
                await session.execute(
                    text("SELECT CAST(CAST(:j AS text) AS jsonb)::text"),
                    {"j": json.dumps(expected_event.data)},
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert row.status == "partially_failed"
    assert stored == expected
    data = json.loads(stored)
    assert data["delivery_status"]["sms"]["last_error"] == AWKWARD
    assert "." not in data["delivery_status"]["sms"]["updated_at"]  # as isoformat writes it
    assert data["delivery_status"]["websocket"]["provider_id"] == AWKWARD


async def test_settled_events_of_one_batch_each_carry_their_own_channels(
    fresh_pg_url: str,
) -> None:
    """Several notifications settle in one outcome batch (their channels aggregated once for
    the whole batch, ``outcome_pg``): each event's ``delivery_status`` has its own channels,
    written now or before, and no other's; one that does not settle has no event."""
    engine = create_engine(fresh_pg_url)
    sessions = create_session_factory(engine)
    try:
        now = utcnow()
        rows = [
            Notification.build(user_id=f"user-{n}", title="t", message="m", channels=channels)
            for n, channels in enumerate(
                [["email", "websocket"], ["websocket"], ["email", "sms"], ["email", "websocket"]]
            )
        ]
        for row in rows:
            row.status, row.lease_owner = "dispatching", "w"
            row.lease_expires_at = row.next_attempt_at = now + timedelta(minutes=1)
        async with sessions() as session, session.begin():
            session.add(WebhookEndpoint(url="https://r.test/h", events=["*"], secret=b"k" * 32))
            session.add_all(rows)
        async with engine.begin() as connection:  # settled before the batch: not written now
            await connection.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.notification_id == rows[0].id)
                .where(NotificationDelivery.channel == "websocket")
                .values(status="sent", attempts=1, provider_id="before")
            )

        def done(event: ChannelEvent, error: str | None = None) -> ChannelChange:
            return ChannelChange(event, 1, last_error=error)

        retry = ChannelChange(ChannelEvent.RETRY, 1, last_error="later", next_attempt_at=now)
        items = [
            ChannelOutcome(rows[0].id, "email", done(ChannelEvent.DELIVERED), release=True),
            ChannelOutcome(rows[1].id, "websocket", done(ChannelEvent.SENT), release=True),
            ChannelOutcome(rows[2].id, "email", done(ChannelEvent.FAILED, "no")),
            ChannelOutcome(rows[2].id, "sms", done(ChannelEvent.DELIVERED), release=True),
            ChannelOutcome(rows[3].id, "email", done(ChannelEvent.SENT)),
            ChannelOutcome(rows[3].id, "websocket", retry, release=True),
        ]
        assert await record_outcomes(sessions, items, worker_id="w") == [True] * 6

        async with sessions() as session:
            stored = {
                data["id"]: data
                for (data,) in (
                    await session.execute(
                        text("SELECT data FROM webhook_events WHERE type = :t"),
                        {"t": "notification.settled"},
                    )
                ).all()
            }
    finally:
        await engine.dispose()
    assert set(stored) == {str(row.id) for row in rows[:3]}
    statuses = {
        key: {channel: s["status"] for channel, s in data["delivery_status"].items()}
        for key, data in stored.items()
    }
    assert statuses == {
        str(rows[0].id): {"email": "delivered", "websocket": "sent"},
        str(rows[1].id): {"websocket": "sent"},
        str(rows[2].id): {"email": "failed", "sms": "delivered"},
    }
    assert stored[str(rows[0].id)]["delivery_status"]["websocket"]["provider_id"] == "before"
