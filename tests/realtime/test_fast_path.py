"""The websocket fast path (docs/architecture.md, "WebSocket fast path"): the enqueue records the
websocket channel ``sent`` and the API publishes the frame right after the commit, with no
worker running, once per socket; a notification settled at enqueue gets the event Python
builds. Real sockets, a real service, every broker (the in-process hub on SQLite, PostgreSQL
NOTIFY, NATS). Across API processes: test_fast_path_instances.py; the worker's republish:
test_fast_path_republish.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets
from sqlalchemy import select

from notifier.models.notification import Notification
from notifier.models.transition import NotificationTransition
from notifier.models.webhook import WebhookEndpoint, WebhookEvent
from notifier.storage.transitions import delivery_status
from notifier.webhooks import events as webhook_events
from tests.realtime.fast_path import GRACE, enqueue, websocket_channel
from tests.realtime.sockets import listening, next_frame, replayed, ws_url
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.service import RunningService, make_settings, migrate, running_service


async def test_frames_arrive_with_no_worker_running(fanout_service: RunningService) -> None:
    """Single, batch and template enqueues alike: no worker runs in this test, so each frame
    came from the API at commit; the row says so as the worker would have."""
    service = fanout_service
    await listening(service)
    user = f"fast-{uuid.uuid4().hex[:8]}"
    async with service.client() as client:
        put = await client.put(
            "/v1/templates/fast.path",
            json={"locales": {"en": {"title": "Hi {{ data.name }}", "message": "m"}}},
        )
    assert put.status_code in (200, 201), put.text
    async with websockets.connect(ws_url(service, await service.user_token(user))) as socket:
        await replayed(socket)
        single = await enqueue(service, "/v1/notifications", {"user_id": user, "title": "one",
                                                              "message": "m"})  # fmt: skip
        batch = await enqueue(
            service,
            "/v1/notifications/batch",
            {"notifications": [{"user_id": user, "title": f"b{i}", "message": "m"}
                               for i in range(2)]},
        )  # fmt: skip
        templated = await enqueue(
            service,
            "/v1/notifications",
            {"user_id": user, "template": "fast.path", "data": {"name": "Ann"}},
        )
        ids = [single["id"], *(n["id"] for n in batch["notifications"]), templated["id"]]
        frames = [await next_frame(socket, "notification") for _ in ids]
    assert [f["notification"]["id"] for f in frames] == ids
    assert frames[-1]["notification"]["title"] == "Hi Ann"
    assert single["delivery_status"]["websocket"]["status"] == "sent"
    assert single["status"] == "delivered"
    channel = await websocket_channel(service, single["id"])
    assert (channel.status, channel.attempts) == ("sent", 1)
    assert channel.next_attempt_at is not None  # the republish, should nobody ack
    async with service.context.sessions() as session:
        kinds = (
            await session.scalars(
                select(NotificationTransition.kind).where(
                    NotificationTransition.notification_id == uuid.UUID(single["id"])
                )
            )
        ).all()
    assert sorted(kinds) == ["channel.sent", "notification.settled"]


async def test_each_frame_reaches_the_socket_once(fanout_service: RunningService) -> None:
    """The group writer hands its frames to the hub at the commit (``deliver_committed``), and
    the request does not hand them over again; a request with an Idempotency-Key writes alone,
    outside the group writer, and still delivers its own. Ids in order, none twice: a repeat
    would come before the last one's frame."""
    service = fanout_service
    await listening(service)
    user = f"once-{uuid.uuid4().hex[:8]}"
    body = {"user_id": user, "message": "m"}
    async with websockets.connect(ws_url(service, await service.user_token(user))) as socket:
        await replayed(socket)  # else the replay's query may find "grouped" and send it too
        grouped = await enqueue(service, "/v1/notifications", {**body, "title": "grouped"})
        async with service.client() as client:
            keyed = await client.post(
                "/v1/notifications",
                json={**body, "title": "keyed"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
        assert keyed.status_code == 202, keyed.text
        batch = await enqueue(
            service,
            "/v1/notifications/batch",
            {"notifications": [{**body, "title": f"b{i}"} for i in range(3)]},
        )
        last = await enqueue(service, "/v1/notifications", {**body, "title": "last"})
        ids = [grouped["id"], keyed.json()["id"], *(n["id"] for n in batch["notifications"])]
        ids.append(last["id"])
        seen = []
        while not seen or seen[-1] != last["id"]:
            seen.append((await next_frame(socket, "notification"))["notification"]["id"])
    assert seen == ids
    # The operator's figure of the stage (``notifier_websocket_fast_path_seconds``).
    written = service.context.metrics.registry.get_sample_value(
        "notifier_websocket_fast_path_seconds_count", {"stage": "written"}
    )
    assert written is not None and written >= len(ids)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def watched(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningService]:
    """A fast-path service on a database of its own, with a webhook endpoint for every event
    and no worker (nothing changes the rows after the enqueue)."""
    url = sqlite_url(tmp_path) if request.param == "sqlite" else await create_pg_database()
    try:
        await migrate(url)
        async with running_service(make_settings(url, websocket_grace_seconds=GRACE)) as service:
            async with service.context.sessions() as session, session.begin():
                endpoint = WebhookEndpoint(url="https://r.test/h", events=["*"], secret=b"k" * 32)
                session.add(endpoint)
            yield service
    finally:
        if request.param == "postgres":
            await drop_pg_database(url)


async def test_the_settled_event_is_the_one_python_builds(watched: RunningService) -> None:
    """A websocket-only notification settles at enqueue: its ``notification.settled`` event
    (built by the PostgreSQL statement itself, by Python on SQLite) carries what the Python
    constructor makes of the rows as committed; a notification with another channel to go does
    not settle."""
    user = 'fast-é "q"'
    batch = await enqueue(
        watched,
        "/v1/notifications/batch",
        {
            "notifications": [
                {"user_id": user, "title": "a", "message": "m"},
                {"user_id": user, "title": "b", "message": "m", "channels": ["websocket"]},
                {"user_id": user, "title": "c", "message": "m", "channels": ["websocket", "email"]},
            ]
        },
    )
    ids = [uuid.UUID(n["id"]) for n in batch["notifications"]]
    async with watched.context.sessions() as session:
        stored = {
            event.data["id"]: event.data
            for event in await session.scalars(
                select(WebhookEvent).where(WebhookEvent.type == "notification.settled")
            )
        }
        rows = {
            row.id: row
            for row in await session.scalars(select(Notification).where(Notification.id.in_(ids)))
        }
        expected = {}
        for ident in ids[:2]:
            row = rows[ident]
            event = webhook_events.notification_settled(
                notification_id=row.id,
                user_id=row.user_id,
                status=row.status,
                delivery_status=delivery_status(row.deliveries),
            )
            expected[str(ident)] = json.loads(json.dumps(event.data))
        transitions = (
            await session.execute(
                select(
                    NotificationTransition.notification_id,
                    NotificationTransition.kind,
                    NotificationTransition.channel,
                    NotificationTransition.from_status,
                    NotificationTransition.to_status,
                    NotificationTransition.attempts,
                    NotificationTransition.latency_ms,
                    NotificationTransition.occurred_at,
                ).where(NotificationTransition.notification_id.in_(ids))
            )
        ).all()
    assert stored == expected
    sent = ("channel.sent", "websocket", "pending", "sent", 1, 0)
    settled = ("notification.settled", None, "pending", "delivered", None, None)
    assert sorted((t[0], *t[1:7]) for t in transitions) == sorted(
        [(ids[0], *sent), (ids[0], *settled), (ids[1], *sent), (ids[1], *settled), (ids[2], *sent)]
    )
    assert all(t.occurred_at == rows[t.notification_id].created_at for t in transitions)
    assert [stored[str(i)]["delivery_status"]["websocket"]["status"] for i in ids[:2]] == [
        "sent",
        "sent",
    ]
