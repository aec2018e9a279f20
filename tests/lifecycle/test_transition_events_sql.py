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
from sqlalchemy import insert, text

from notifier.lifecycle.machine import Transition
from notifier.models.base import utcnow
from notifier.models.webhook import WebhookEndpoint
from notifier.storage.db import create_engine
from notifier.storage.transitions import TransitionRecord, read_record, record_transitions
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
