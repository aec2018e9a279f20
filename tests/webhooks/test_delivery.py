"""Webhook delivery end to end, on both databases: the API, a real sender, and a real HTTP
receiver on loopback that verifies every request with ``standardwebhooks``."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import WebhookVerificationError

from notifier.models.base import utcnow
from notifier.models.webhook import WebhookAttempt, WebhookEndpoint
from notifier.storage.webhooks import emit_events
from notifier.webhooks.events import (
    WebhookEvent,
    WebhookEventType,
    channel_event,
    notification_read,
    notification_settled,
    task_ended,
)
from tests.peers.webhook import WebhookReceiver, WebhookReply
from tests.webhooks.harness import webhook_stack


async def test_test_event_is_delivered_signed(db_url: str, receiver: WebhookReceiver) -> None:
    async with webhook_stack(db_url) as hooks, hooks.sender():
        endpoint = await hooks.create_endpoint(receiver.url(), ["notification.failed"])
        event_id = await hooks.send_test(endpoint["id"])
        await receiver.wait_for(1)
        attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 1)

    [request] = receiver.requests
    body = request.verify(endpoint["secret"])
    assert request.id == event_id == body["id"]
    assert body["type"] == "webhook.test"
    assert body["data"]["test"] is True
    assert body["data"]["endpoint_id"] == endpoint["id"]
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("notifier-webhooks/")
    assert len(request.signatures) == 1 and request.signatures[0].startswith("v1,")
    [logged] = attempts
    assert logged["event_id"] == event_id
    assert (logged["type"], logged["status_code"], logged["error"]) == ("webhook.test", 200, None)
    assert logged["attempt"] == 1


async def test_deleting_an_endpoint_deletes_its_deliveries_log(
    db_url: str, receiver: WebhookReceiver
) -> None:
    """The log has no foreign key to cascade by (migration 0010): the deletion itself removes
    the endpoint's entries, and only its."""
    async with webhook_stack(db_url) as hooks, hooks.sender():
        doomed = await hooks.create_endpoint(receiver.url(), ["notification.failed"])
        kept = await hooks.create_endpoint(receiver.url(), ["notification.failed"])
        for endpoint in (doomed, kept):
            await hooks.send_test(endpoint["id"])
            await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 1)
        deleted = await hooks.api.delete(f"/v1/webhook-endpoints/{doomed['id']}")
        async with hooks.stack.service.context.engine.connect() as connection:
            ours = [uuid.UUID(endpoint["id"]) for endpoint in (doomed, kept)]
            query = select(WebhookAttempt.endpoint_id).where(WebhookAttempt.endpoint_id.in_(ours))
            logged = (await connection.execute(query)).scalars().all()
        kept_log = await hooks.attempts(kept["id"])
    assert deleted.status_code == 204
    assert [str(endpoint_id) for endpoint_id in logged] == [kept["id"]]
    assert len(kept_log) == 1


async def test_500_twice_then_200_is_three_attempts_under_one_id(
    db_url: str, receiver: WebhookReceiver
) -> None:
    receiver.script("/hook", WebhookReply(500), WebhookReply(503))
    async with webhook_stack(db_url) as hooks, hooks.sender():
        endpoint = await hooks.create_endpoint(receiver.url("/hook"))
        event_id = await hooks.send_test(endpoint["id"])
        await receiver.wait_for(3)
        attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 3)
        [row] = await hooks.delivery_rows(endpoint["id"])

    assert [r.id for r in receiver.requests] == [event_id] * 3
    bodies = [r.verify(endpoint["secret"]) for r in receiver.requests]
    assert bodies[0] == bodies[1] == bodies[2]  # the same event, byte for byte
    assert len({r.body for r in receiver.requests}) == 1
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    assert [a["error"] for a in attempts] == ["HTTP 500", "HTTP 503", None]
    assert {a["event_id"] for a in attempts} == {event_id}
    status, tries, next_attempt_at, lease_owner, code = row
    assert (status, tries, next_attempt_at, lease_owner, code) == ("succeeded", 3, None, None, 200)


async def test_past_the_schedule_the_delivery_fails(db_url: str, receiver: WebhookReceiver) -> None:
    receiver.script("/down", *[WebhookReply(500)] * 10)
    async with webhook_stack(db_url, webhook_retry_schedule=[0.05, 0.05]) as hooks:
        async with hooks.sender():
            endpoint = await hooks.create_endpoint(receiver.url("/down"))
            await hooks.send_test(endpoint["id"])
            attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 3)
            [row] = await hooks.delivery_rows(endpoint["id"])
        assert (await hooks.endpoint(endpoint["id"]))["enabled"] is True  # only 410 disables

    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert len(receiver.requests) == 3
    assert row[:3] == ("failed", 3, None)


async def test_every_event_type_once_to_each_subscriber(
    db_url: str, receiver: WebhookReceiver
) -> None:
    nid, at = uuid.uuid4(), utcnow()

    def channel(name: str, status: str, last_error: str | None) -> WebhookEvent | None:
        return channel_event(
            notification_id=nid,
            user_id="alice",
            channel=name,
            status=status,
            attempts=1,
            last_error=last_error,
            provider_id=None,
        )

    events = [
        channel("email", "sent", None),
        channel("email", "delivered", None),
        channel("sms", "failed", "HTTP 400"),
        channel("browser", "skipped", "quiet hours"),
        notification_read(notification_id=nid, user_id="alice", read_at=at),
        notification_settled(
            notification_id=nid,
            user_id="alice",
            status="partially_failed",
            delivery_status={"email": {"status": "delivered"}, "sms": {"status": "failed"}},
        ),
        task_ended("completed", {"task_id": "t-1", "status": "completed", "progress": 100.0}),
        task_ended("failed", {"task_id": "t-2", "status": "failed", "error_message": "boom"}),
    ]
    assert all(event is not None for event in events)
    async with webhook_stack(db_url) as hooks, hooks.sender():
        everything = await hooks.create_endpoint(receiver.url("/all"), ["*"])
        some = await hooks.create_endpoint(
            receiver.url("/some"), ["notification.delivered", "task.failed"]
        )
        assert await hooks.emit(*[e for e in events if e is not None]) == len(events) + 2
        await receiver.wait_for(len(events), path="/all")
        await receiver.wait_for(2, path="/some")

    received = {r.verify(everything["secret"])["type"]: r for r in receiver.on("/all")}
    assert len(receiver.on("/all")) == len(received) == len(events)  # each type once
    assert set(received) == {t.value for t in WebhookEventType} - {"webhook.test"}
    by_type = {r.verify(some["secret"])["type"]: r for r in receiver.on("/some")}
    assert set(by_type) == {"notification.delivered", "task.failed"}
    # One event, one id, whichever endpoint it goes to.
    for event_type, request in by_type.items():
        assert request.id == received[event_type].id
        assert request.body == received[event_type].body
    data = {t: r.json()["data"] for t, r in received.items()}
    assert data["notification.failed"] == {
        "id": str(nid),
        "user_id": "alice",
        "channel": "sms",
        "status": "failed",
        "attempts": 1,
        "last_error": "HTTP 400",
        "provider_id": None,
    }
    assert data["notification.read"]["read_at"].startswith(at.date().isoformat())
    assert data["notification.settled"]["status"] == "partially_failed"
    assert data["notification.settled"]["delivery_status"]["sms"] == {"status": "failed"}
    assert data["task.failed"]["error_message"] == "boom"


async def test_events_nobody_subscribes_to_are_not_stored(db_url: str) -> None:
    read = notification_read(notification_id=uuid.uuid4(), user_id="u", read_at=utcnow())
    async with webhook_stack(db_url) as hooks:
        assert await hooks.emit(read) == 0  # no endpoint at all
        await hooks.create_endpoint("http://127.0.0.1:9/x", ["task.failed"])
        assert await hooks.emit(read) == 0
        assert await hooks.stack.sql("SELECT count(*) FROM webhook_events") == [(0,)]


async def test_a_rolled_back_transaction_emits_nothing(
    db_url: str, receiver: WebhookReceiver
) -> None:
    rolled_back = task_ended("failed", {"task_id": "never", "status": "failed"})
    async with webhook_stack(db_url) as hooks, hooks.sender():
        endpoint = await hooks.create_endpoint(receiver.url())
        async with hooks.stack.service.context.engine.connect() as connection:
            transaction = await connection.begin()
            assert await emit_events(connection, [rolled_back]) == 1
            await transaction.rollback()
        # A committed event after it: once that one has arrived, the sender has looked at
        # the queue since the rollback.
        committed = await hooks.send_test(endpoint["id"])
        await receiver.wait_for(1)
        await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 1)
        stored = await hooks.stack.sql("SELECT type FROM webhook_events")

    assert [r.id for r in receiver.requests] == [committed]
    assert stored == [("webhook.test",)]


async def test_410_disables_until_patched_back(db_url: str, receiver: WebhookReceiver) -> None:
    receiver.script("/hook", WebhookReply(410))
    async with webhook_stack(db_url) as hooks, hooks.sender():
        start = utcnow()
        missed = task_ended("completed", {"task_id": "t-9", "status": "completed"})
        endpoint = await hooks.create_endpoint(receiver.url("/hook"))
        first = await hooks.send_test(endpoint["id"])
        await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 1)
        disabled = await hooks.endpoint(endpoint["id"])
        # While disabled: events are kept (for a replay) but not sent; a test is refused.
        assert await hooks.emit(missed) == 0
        refused = await hooks.api.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
        patched = await hooks.api.patch(
            f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True}
        )
        second = await hooks.send_test(endpoint["id"])
        await receiver.wait_for(2)
        attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 2)
        rows = await hooks.delivery_rows(endpoint["id"])
        # What it missed while disabled comes with a replay, under its own id.
        replayed = await hooks.api.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/replay", json={"since": start.isoformat()}
        )
        await receiver.wait_for(5)

    assert disabled["enabled"] is False
    assert "410" in disabled["disabled_reason"]
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "conflict"
    assert patched.status_code == 200 and patched.json()["enabled"] is True
    assert patched.json()["disabled_reason"] is None
    assert [r.id for r in receiver.requests[:2]] == [first, second]
    assert [a["status_code"] for a in attempts] == [410, 200]
    assert [row[:2] for row in rows] == [("failed", 1), ("succeeded", 1)]
    assert replayed.json() == {"queued": 3}
    assert {r.id for r in receiver.requests[2:]} == {first, second, str(missed.id)}


async def test_rotation_signs_with_both_secrets_for_the_overlap(
    db_url: str, receiver: WebhookReceiver
) -> None:
    async with webhook_stack(db_url) as hooks, hooks.sender():
        endpoint = await hooks.create_endpoint(receiver.url())
        old = endpoint["secret"]
        response = await hooks.api.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
        assert response.status_code == 200, response.text
        new, until = response.json()["secret"], response.json()["previous_secret_expires_at"]
        overlap = datetime.fromisoformat(until) - utcnow()
        await hooks.send_test(endpoint["id"])
        await receiver.wait_for(1)
        # Move the clock past the overlap: the stored expiry, into the past.
        async with hooks.stack.service.context.engine.begin() as connection:
            await connection.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == uuid.UUID(endpoint["id"]))
                .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
            )
        await hooks.send_test(endpoint["id"])
        await receiver.wait_for(2)

    assert new != old and new.startswith("whsec_")
    assert timedelta(hours=23, minutes=59) < overlap <= timedelta(hours=24)
    during, after = receiver.requests
    assert len(during.signatures) == 2
    assert during.verify(old) == during.verify(new)  # either secret verifies it
    assert len(after.signatures) == 1
    after.verify(new)
    with pytest.raises(WebhookVerificationError):
        after.verify(old)


async def test_replay_sends_again_with_the_same_ids(db_url: str, receiver: WebhookReceiver) -> None:
    def completed(n: int) -> WebhookEvent:
        return task_ended("completed", {"task_id": f"t-{n}", "status": "completed"})

    async with webhook_stack(db_url) as hooks, hooks.sender():
        endpoint = await hooks.create_endpoint(receiver.url(), ["task.completed"])
        before = completed(0)
        await hooks.emit(before)
        await receiver.wait_for(1)
        since = utcnow()
        later = [completed(1), completed(2)]
        await hooks.emit(*later)
        await receiver.wait_for(3)
        response = await hooks.api.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/replay", json={"since": since.isoformat()}
        )
        await receiver.wait_for(5)
        attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 5)

    assert response.status_code == 202, response.text
    assert response.json() == {"queued": 2}
    first_time, again = receiver.requests[:3], receiver.requests[3:]
    assert {r.id for r in again} == {str(e.id) for e in later}
    originals = {r.id: r.body for r in first_time}
    assert all(r.body == originals[r.id] for r in again)  # the same events, byte for byte
    for request in again:
        request.verify(endpoint["secret"])
    assert all(a["status_code"] == 200 for a in attempts)
