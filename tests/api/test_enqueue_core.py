"""The ORM-free enqueue path (``notifier/storage/enqueue.py``) against the ORM it replaced: the
same stored rows, the same answer byte for byte, on SQLite and PostgreSQL; plus its wake-ups,
concurrent duplicate keys on the batch endpoint, and the rate-limit refunds."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from notifier.models import Notification
from notifier.realtime.fanout import asyncpg_dsn
from notifier.schemas.notification import NotificationCreate, NotificationPublic
from notifier.storage.enqueue import insert_prepared, prepare, write_connection
from notifier.storage.notifications import DISPATCH_WAKEUP_CHANNEL
from notifier.storage.wakeups import DISPATCH
from tests.api.helpers import assert_error, new_user, notification_body, notifications_of
from tests.support.service import RunningService, make_settings, running_service

LATER = datetime.now(UTC) + timedelta(days=3)

# One case per kind of value the insert has to carry: defaults, every optional field, a
# non-UTC offset, several channels, nested metadata, a recipient override.
CASES: list[dict[str, Any]] = [
    {},
    {
        "notification_type": "error",
        "priority": "urgent",
        "channels": ["email", "websocket", "sms"],
        "related_task_id": "task-7",
        "action_url": "https://example.com/a?b=c",
        "metadata": {"n": 1, "f": 1.5, "nested": {"list": [1, "two", None, True]}, "é": "ü"},
        "recipient": {"email": "someone@example.com", "phone": "+14155550123"},
    },
    {
        "priority": "low",
        "send_at": (LATER.astimezone(timezone(timedelta(hours=2)))).isoformat(),
        "expires_at": (LATER + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
    },
    {"priority": "high", "channels": ["browser"], "recipient": {"email": "x@example.com"}},
    {"send_at": "2001-02-03T04:05:06.5+00:00"},  # in the past: due now
]

# Columns that differ between any two inserts whatever the path: the row's identity and clock.
_VOLATILE = {"id", "user_id", "created_at", "updated_at", "next_attempt_at", "notification_id"}


def _payload(user: str, case: dict[str, Any]) -> NotificationCreate:
    return NotificationCreate.model_validate(notification_body(user, **case))


def _orm_row(payload: NotificationCreate, *, now: datetime | None = None) -> Notification:
    """What the enqueue route built before the Core path (its ``_build``)."""
    return Notification.build(
        user_id=payload.user_id,
        title=payload.title,
        message=payload.message,
        notification_type=payload.notification_type,
        priority=payload.priority,
        channels=payload.channels,
        related_task_id=payload.related_task_id,
        action_url=payload.action_url,
        metadata=payload.metadata,
        recipient=payload.recipient.model_dump(exclude_none=True) if payload.recipient else None,
        send_at=payload.send_at,
        expires_at=payload.expires_at,
        now=now,
    )


async def _stored(service: RunningService, user: str) -> list[dict[str, Any]]:
    """The raw columns of ``user``'s rows and their delivery rows, as the database has them."""
    async with service.context.engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT * FROM notifications WHERE user_id = :u ORDER BY title, message"),
                {"u": user},
            )
        ).mappings()
        result = []
        for row in rows:
            deliveries = (
                await connection.execute(
                    text(
                        "SELECT * FROM notification_deliveries WHERE notification_id = :i "
                        "ORDER BY channel"
                    ),
                    {"i": row["id"]},
                )
            ).mappings()
            stored = dict(row)
            # The time a row becomes due is "now" unless it was scheduled for later.
            stored["due_is_created"] = row["next_attempt_at"] == row["created_at"]
            stored["updated_is_created"] = row["updated_at"] == row["created_at"]
            stored["deliveries"] = [
                {k: v for k, v in d.items() if k not in _VOLATILE}
                | {"updated_is_created": d["updated_at"] == row["created_at"]}
                for d in deliveries
            ]
            result.append({k: v for k, v in stored.items() if k not in _VOLATILE})
        return result


async def test_core_insert_stores_what_the_orm_stored(service: RunningService) -> None:
    orm_user, core_user = new_user(), new_user()
    async with service.context.sessions() as session:
        for case in CASES:
            session.add(_orm_row(_payload(orm_user, case)))
        await session.commit()
    prepared = prepare([_payload(core_user, case) for case in CASES])
    async with write_connection(service.context.engine) as connection:
        await insert_prepared(connection, prepared)
    orm_rows, core_rows = await _stored(service, orm_user), await _stored(service, core_user)
    assert len(core_rows) == len(CASES)
    assert core_rows == orm_rows


async def test_core_answer_is_the_orm_answer_byte_for_byte() -> None:
    user = new_user()
    prepared = prepare([_payload(user, case) for case in CASES])
    for case, answer in zip(CASES, prepared.public, strict=True):
        # The ORM's answer for a row with this one's id and clock.
        row = _orm_row(_payload(user, case), now=datetime.fromisoformat(answer["created_at"]))
        row.id = uuid.UUID(answer["id"])
        expected = NotificationPublic.from_row(row).model_dump(mode="json")
        assert json.dumps(answer) == json.dumps(expected)


async def test_enqueue_answer_matches_what_get_reads_back(service: RunningService) -> None:
    user = new_user()
    body = {"notifications": [notification_body(user, **case) for case in CASES]}
    async with service.client() as client:
        created = await client.post("/v1/notifications/batch", json=body)
        assert created.status_code == 202, created.text
        for item in created.json()["notifications"]:
            read = (await client.get(f"/v1/notifications/{item['id']}")).json()
            # GET lists channels in the database's order, and times in UTC; the 202 (as
            # before) in the request's order, with the offsets it was given.
            assert _instants(read) == _instants(item)
            assert dict(read["delivery_status"]) == dict(item["delivery_status"])


def _instants(answer: dict[str, Any]) -> dict[str, Any]:
    times = ("send_at", "expires_at", "created_at", "updated_at", "read_at")
    return answer | {name: answer[name] and datetime.fromisoformat(answer[name]) for name in times}


async def test_concurrent_batches_with_one_key_store_one_batch(service: RunningService) -> None:
    user = new_user()
    headers = {"Idempotency-Key": f"batch-{uuid.uuid4().hex}"}
    body = {"notifications": [notification_body(user, title=f"n{i}") for i in range(3)]}
    async with service.client() as client:
        responses = await asyncio.gather(
            *(client.post("/v1/notifications/batch", json=body, headers=headers) for _ in range(8))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 7 + [202], [r.text for r in responses if r.status_code >= 300]
    # (A replay comes back from JSONB, which orders keys its own way: compare values.)
    assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
    assert await notifications_of(service, user) == 3


async def test_enqueue_wakes_the_in_process_worker(service: RunningService) -> None:
    woken = asyncio.Event()
    service.context.wakeups.subscribe(DISPATCH, woken.set)
    try:
        async with service.client() as client:
            response = await client.post("/v1/notifications", json=notification_body(new_user()))
        assert response.status_code == 202, response.text
        assert woken.is_set()
    finally:
        service.context.wakeups.unsubscribe(DISPATCH, woken.set)


@pytest.fixture
async def wakeups(pg_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    connection = await asyncpg.connect(asyncpg_dsn(pg_url))
    queue: asyncio.Queue[str] = asyncio.Queue()
    await connection.add_listener(
        DISPATCH_WAKEUP_CHANNEL, lambda _c, _pid, channel, _payload: queue.put_nowait(channel)
    )
    try:
        yield queue
    finally:
        await connection.close()


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["/v1/notifications", "/v1/notifications/batch"])
async def test_enqueue_notifies_the_dispatchers_on_postgres(
    pg_url: str, wakeups: asyncio.Queue[str], path: str
) -> None:
    body = notification_body(new_user())
    async with running_service(make_settings(pg_url)) as service, service.client() as client:
        payload = body if path == "/v1/notifications" else {"notifications": [body]}
        response = await client.post(path, json=payload)
        assert response.status_code == 202, response.text
        assert await asyncio.wait_for(wakeups.get(), 10) == DISPATCH_WAKEUP_CHANNEL


@pytest.fixture(scope="module")
async def limited(database_url: str) -> AsyncIterator[RunningService]:
    settings = make_settings(
        database_url, rate_limit_recipient_per_minute=1, rate_limit_recipient_burst=2
    )
    async with running_service(settings) as service:
        yield service


async def test_replays_and_conflicts_spend_no_recipient_tokens(limited: RunningService) -> None:
    user = new_user()
    headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    async with limited.client() as client:
        first = await client.post(
            "/v1/notifications", json=notification_body(user), headers=headers
        )
        assert first.status_code == 202, first.text
        for _ in range(3):  # more than the burst: each would be a 429 if it were charged
            replay = await client.post(
                "/v1/notifications", json=notification_body(user), headers=headers
            )
            assert replay.status_code == 200, replay.text
            other = await client.post(
                "/v1/notifications", json=notification_body(user, title="x"), headers=headers
            )
            assert_error(other, 409, "conflict")
        second = await client.post("/v1/notifications", json=notification_body(user))
        assert second.status_code == 202, second.text
        third = await client.post("/v1/notifications", json=notification_body(user))
        assert_error(third, 429, "rate_limited")
    assert await notifications_of(limited, user) == 2
