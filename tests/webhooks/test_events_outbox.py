"""The outbox fed by the state machine, end to end on both databases: real notifications sent
by a real dispatcher to real peers (an SMTP server, a Twilio-speaking server, a WebSocket
client), their transitions recorded with the change, and the events they make delivered to a
real HTTP receiver that verifies every request with ``standardwebhooks``.

The webhook sender polls only every 30 s here: an event reaches the receiver within a test's
time only if its writer woke the sender (NOTIFY on PostgreSQL; on SQLite the in-process wake-up
after the commit, from the API and from the dispatcher alike)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import websockets
from sqlalchemy import func, select

from notifier.models.notification import Notification
from notifier.models.transition import NotificationTransition
from notifier.models.webhook import WebhookEvent
from notifier.storage.notifications import cancel_unsent_channels
from notifier.storage.wakeups import DISPATCH, WEBHOOKS
from tests.peers.smtp import SmtpPeer
from tests.peers.twilio import TwilioPeer, TwilioReply
from tests.peers.webhook import WebhookReceiver
from tests.realtime.sockets import listening, next_frame, ws_url
from tests.support.worker import running_dispatcher
from tests.webhooks.harness import WebhookStack, webhook_stack
from workers.dispatcher import Dispatcher
from workers.wakeup import Wakeup

SLOW_POLL = {"poll_interval_seconds": 30.0}


@contextlib.asynccontextmanager
async def dispatcher(hooks: WebhookStack) -> AsyncIterator[Dispatcher]:
    """A dispatcher wired as `notifier run` wires it: woken by the API's commits, and waking
    the webhook sender after the commits of outcomes that wrote events."""
    service = hooks.stack.service
    context = service.context
    wakeup = Wakeup()
    context.wakeups.subscribe(DISPATCH, wakeup.notify)
    try:
        async with running_dispatcher(
            service.settings,
            fanout=context.fanout if service.settings.is_sqlite else None,
            wakeup=wakeup,
            on_webhook_events=lambda: context.wakeups.committed(WEBHOOKS),
        ) as running:
            yield running
    finally:
        context.wakeups.unsubscribe(DISPATCH, wakeup.notify)


def received(receiver: WebhookReceiver, secret: str, notification_id: str) -> list[dict[str, Any]]:
    """The verified bodies of the events about one notification."""
    bodies = [r.verify(secret) for r in receiver.requests]
    return [b for b in bodies if b["data"].get("id") == notification_id]


async def transitions(hooks: WebhookStack, notification_id: str) -> list[tuple[Any, ...]]:
    query = (
        select(
            NotificationTransition.kind,
            NotificationTransition.channel,
            NotificationTransition.from_status,
            NotificationTransition.to_status,
            NotificationTransition.attempts,
            NotificationTransition.latency_ms,
        )
        .where(NotificationTransition.notification_id == uuid.UUID(notification_id))
        .order_by(NotificationTransition.occurred_at, NotificationTransition.kind)
    )
    async with hooks.stack.service.context.engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(query)]


async def stored_events(hooks: WebhookStack, kind: str) -> int:
    query = select(func.count()).select_from(WebhookEvent).where(WebhookEvent.type == kind)
    async with hooks.stack.service.context.engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


async def test_a_delivered_email_emits_delivered_then_settled(
    db_url: str, receiver: WebhookReceiver, smtp_peer: SmtpPeer
) -> None:
    async with (
        webhook_stack(db_url, **smtp_peer.settings()) as hooks,
        hooks.sender(**SLOW_POLL),
        dispatcher(hooks),
    ):
        endpoint = await hooks.create_endpoint(receiver.url())
        created = await hooks.stack.notify(
            user_id="ada", title="t", message="m", channels=["email"],
            recipient={"email": "ada@example.com"},
        )  # fmt: skip
        await hooks.stack.wait_channel(created["id"], "email", "delivered")
        await receiver.wait_for(2)
        history = await transitions(hooks, created["id"])

    # Exactly these two (one event per transition; a 250 is `delivered` alone), in either
    # order: the sender posts them concurrently.
    bodies = sorted(received(receiver, endpoint["secret"], created["id"]), key=lambda b: b["type"])
    assert [b["type"] for b in bodies] == ["notification.delivered", "notification.settled"]
    delivered, settled = (b["data"] for b in bodies)
    assert (delivered["channel"], delivered["status"], delivered["attempts"]) == (
        "email",
        "delivered",
        1,
    )
    assert delivered["user_id"] == "ada"
    assert settled["status"] == "delivered"
    assert settled["delivery_status"]["email"]["status"] == "delivered"
    # The history: the channel's one change, then the notification's, from the claim's status.
    [channel_row, settled_row] = history
    assert channel_row[:5] == ("channel.delivered", "email", "pending", "delivered", 1)
    assert channel_row[5] is not None and channel_row[5] >= 0  # its first success: a latency
    assert settled_row == ("notification.settled", None, "dispatching", "delivered", None, None)


async def test_a_failed_sms_emits_failed(
    db_url: str, receiver: WebhookReceiver, twilio_peer: TwilioPeer
) -> None:
    twilio_peer.fail_to("+15005550001", TwilioReply.error(400, 21211))  # invalid 'To': for good
    async with (
        webhook_stack(db_url, **twilio_peer.settings()) as hooks,
        hooks.sender(**SLOW_POLL),
        dispatcher(hooks),
    ):
        endpoint = await hooks.create_endpoint(receiver.url(), ["notification.failed"])
        created = await hooks.stack.notify(
            user_id="bo", title="t", message="m", channels=["sms"],
            recipient={"phone": "+15005550001"},
        )  # fmt: skip
        body = await hooks.stack.wait_channel(created["id"], "sms", "failed")
        await receiver.wait_for(1)
        history = await transitions(hooks, created["id"])

    [event] = received(receiver, endpoint["secret"], created["id"])
    assert event["type"] == "notification.failed"
    assert event["data"]["channel"] == "sms" and event["data"]["status"] == "failed"
    assert event["data"]["last_error"] == body["delivery_status"]["sms"]["last_error"]
    assert [(k, c, f, t) for k, c, f, t, *_ in history] == [
        ("channel.failed", "sms", "pending", "failed"),
        ("notification.settled", None, "dispatching", "failed"),
    ]
    assert history[0][5] is None  # no success, no latency


async def test_a_read_emits_read_once(
    db_url: str, receiver: WebhookReceiver, smtp_peer: SmtpPeer
) -> None:
    async with webhook_stack(db_url) as hooks, hooks.sender(**SLOW_POLL):
        endpoint = await hooks.create_endpoint(receiver.url(), ["notification.read"])
        created = await hooks.stack.notify(user_id="cy", title="t", message="m")
        path = f"/v1/users/cy/notifications/{created['id']}/read"
        first = await hooks.api.post(path)
        again = await hooks.api.post(path)  # already read: no second event
        assert first.status_code == again.status_code == 200, first.text
        await receiver.wait_for(1)
        history = await transitions(hooks, created["id"])
        stored = await stored_events(hooks, "notification.read")

    [event] = received(receiver, endpoint["secret"], created["id"])
    assert event["type"] == "notification.read"
    assert event["data"]["user_id"] == "cy"
    assert event["data"]["read_at"].startswith(first.json()["read_at"][:19])
    # The websocket fast path recorded `sent` and `settled` at enqueue: one read all the same.
    reads = [h for h in history if h[0] == "notification.read"]
    assert reads == [("notification.read", None, "unread", "read", None, None)]
    assert stored == 1


async def test_read_all_emits_one_read_per_notification(
    db_url: str, receiver: WebhookReceiver
) -> None:
    async with webhook_stack(db_url) as hooks, hooks.sender(**SLOW_POLL):
        endpoint = await hooks.create_endpoint(receiver.url(), ["notification.read"])
        ids = [
            (await hooks.stack.notify(user_id="di", title=f"t{n}", message="m"))["id"]
            for n in range(3)
        ]
        response = await hooks.api.post("/v1/users/di/notifications/read-all")
        assert response.json()["updated"] == 3, response.text
        await receiver.wait_for(3)

    bodies = [r.verify(endpoint["secret"]) for r in receiver.requests]
    assert sorted(b["data"]["id"] for b in bodies) == sorted(ids)
    assert {b["type"] for b in bodies} == {"notification.read"}


async def test_a_task_completion_emits_task_completed(
    db_url: str, receiver: WebhookReceiver
) -> None:
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    async with webhook_stack(db_url) as hooks, hooks.sender(**SLOW_POLL):
        endpoint = await hooks.create_endpoint(receiver.url(), ["task.completed", "task.failed"])
        api = hooks.api
        await api.post("/v1/tasks", json={"task_id": task_id, "user_id": "ed", "task_type": "x"})
        await api.patch(f"/v1/tasks/{task_id}", json={"status": "running"})
        done = await api.patch(f"/v1/tasks/{task_id}", json={"status": "completed"})
        assert done.status_code == 200, done.text
        await receiver.wait_for(1)

    [request] = receiver.requests
    body = request.verify(endpoint["secret"])
    assert body["type"] == "task.completed"
    assert body["data"] == done.json()  # the task as GET /v1/tasks/{id} shows it


async def test_a_change_that_rolls_back_emits_nothing(
    db_url: str, receiver: WebhookReceiver
) -> None:
    """A cancel whose transaction rolls back after its transitions and events were written
    leaves neither; the same cancel committed emits its one ``notification.settled``."""
    async with webhook_stack(db_url) as hooks, hooks.sender(**SLOW_POLL):
        endpoint = await hooks.create_endpoint(receiver.url())
        created = await hooks.stack.notify(
            user_id="fi", title="t", message="m", send_at="2999-01-01T00:00:00Z"
        )
        context = hooks.stack.service.context
        async with context.sessions() as session:
            row = await session.get(Notification, uuid.UUID(created["id"]), with_for_update=True)
            assert row is not None
            changed = await cancel_unsent_channels(session, row, row.created_at, context.wakeups)
            assert changed == 1
            assert await session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
            await session.rollback()
        assert await transitions(hooks, created["id"]) == []
        assert await stored_events(hooks, "notification.settled") == 0
        assert (await hooks.stack.get(created["id"]))["status"] == "pending"

        cancelled = await hooks.api.post(f"/v1/notifications/{created['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        await receiver.wait_for(1)
        history = await transitions(hooks, created["id"])

    bodies = received(receiver, endpoint["secret"], created["id"])
    assert [b["type"] for b in bodies] == ["notification.settled"]  # cancelled: no channel event
    assert bodies[0]["data"]["status"] == "cancelled"
    assert [h[:4] for h in history] == [
        ("channel.cancelled", "websocket", "pending", "cancelled"),
        ("notification.settled", None, "pending", "cancelled"),
    ]


async def test_a_websocket_frame_then_its_ack(db_url: str, receiver: WebhookReceiver) -> None:
    """The enqueue's `sent` (the websocket fast path: the frame published at commit) and the
    client's ack (`sent` → `delivered`) are two transitions of the channel, each its own event;
    the notification settles once, when the frame went out."""
    async with (
        webhook_stack(db_url) as hooks,
        hooks.sender(**SLOW_POLL),
        dispatcher(hooks),
    ):
        service = hooks.stack.service
        await listening(service)
        endpoint = await hooks.create_endpoint(receiver.url())
        token = await service.user_token("gu")
        async with websockets.connect(ws_url(service, token)) as socket:
            created = await hooks.stack.notify(user_id="gu", title="t", message="m")
            await next_frame(socket, "notification")
            await receiver.wait_for(2)  # notification.sent, notification.settled
            await socket.send(json.dumps({"type": "ack", "id": created["id"]}))
            await next_frame(socket, "acked")
        await receiver.wait_for(3)
        history = await transitions(hooks, created["id"])

    bodies = received(receiver, endpoint["secret"], created["id"])
    assert sorted(b["type"] for b in bodies[:2]) == ["notification.sent", "notification.settled"]
    assert bodies[2]["type"] == "notification.delivered"
    assert bodies[2]["data"]["channel"] == "websocket"
    assert sorted(h[:4] for h in history) == [
        ("channel.delivered", "websocket", "sent", "delivered"),
        ("channel.sent", "websocket", "pending", "sent"),
        # Settled by the enqueue itself, before any worker held it (the fast path).
        ("notification.settled", None, "pending", "delivered"),
    ]
    latency = {h[0]: h[5] for h in history}
    assert latency["channel.sent"] is not None and latency["channel.delivered"] is None
