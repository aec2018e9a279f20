"""The websocket fast path (docs/architecture.md, "WebSocket fast path"): the enqueue records the
websocket channel ``sent`` and the API publishes the frame right after the commit, with no
worker running; the worker republishes once what nobody acked within the grace, never what was
acked; a recipient who opted out of websocket gets no frame. Real sockets, a real service, every
broker (the in-process hub on SQLite, PostgreSQL NOTIFY, NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from sqlalchemy import func, select

from notifier.models.notification import Notification, NotificationDelivery
from notifier.models.transition import NotificationTransition
from notifier.models.webhook import WebhookEndpoint, WebhookEvent
from notifier.realtime.fanout import FrameForwarder, fanout_payload
from notifier.realtime.hub import ConnectionHub
from notifier.settings import Settings
from notifier.storage.transitions import delivery_status
from notifier.webhooks import events as webhook_events
from tests.realtime.sockets import listening, next_frame, ws_url
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.nats import NATS_URL, require_nats
from tests.support.service import RunningService, make_settings, migrate, running_service
from tests.support.worker import dispatcher_beside

GRACE = 1.0  # seconds: short, so that the republish tests wait for it, not for the default 5


async def _enqueue(service: RunningService, path: str, body: dict[str, Any]) -> Any:
    async with service.client() as client:
        response = await client.post(path, json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def _channel(service: RunningService, notification_id: str) -> NotificationDelivery:
    async with service.context.sessions() as session:
        row = await session.scalar(
            select(NotificationDelivery).where(
                NotificationDelivery.notification_id == uuid.UUID(notification_id),
                NotificationDelivery.channel == "websocket",
            )
        )
    assert row is not None
    return row


async def _due(service: RunningService, notification_id: str) -> Any:
    async with service.context.sessions() as session:
        return await session.scalar(
            select(Notification.next_attempt_at).where(
                Notification.id == uuid.UUID(notification_id)
            )
        )


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
        single = await _enqueue(service, "/v1/notifications", {"user_id": user, "title": "one",
                                                               "message": "m"})  # fmt: skip
        batch = await _enqueue(
            service,
            "/v1/notifications/batch",
            {"notifications": [{"user_id": user, "title": f"b{i}", "message": "m"}
                               for i in range(2)]},
        )  # fmt: skip
        templated = await _enqueue(
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
    channel = await _channel(service, single["id"])
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
        grouped = await _enqueue(service, "/v1/notifications", {**body, "title": "grouped"})
        async with service.client() as client:
            keyed = await client.post(
                "/v1/notifications",
                json={**body, "title": "keyed"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
        assert keyed.status_code == 202, keyed.text
        batch = await _enqueue(
            service,
            "/v1/notifications/batch",
            {"notifications": [{**body, "title": f"b{i}"} for i in range(3)]},
        )
        last = await _enqueue(service, "/v1/notifications", {**body, "title": "last"})
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


@pytest.fixture(params=["notify", "nats"])
async def two_instances(
    request: pytest.FixtureRequest, pg_url: str
) -> AsyncIterator[tuple[RunningService, RunningService]]:
    """Two API processes' worth of services on one database, as two `notifier serve` are."""
    fanout_url = NATS_URL if request.param == "nats" else None
    if fanout_url is not None:
        await require_nats(fanout_url)
    first = make_settings(pg_url, fanout_url=fanout_url)
    second = make_settings(
        pg_url,
        fanout_url=fanout_url,
        api_keys=",".join(k.get_secret_value() for k in first.api_keys),
        token_secret=first.token_secret.get_secret_value() if first.token_secret else None,
    )
    async with running_service(first) as a, running_service(second) as b:
        await listening(a)
        await listening(b)
        yield a, b


@pytest.mark.postgres
async def test_another_instance_forwards_the_frame_once(
    two_instances: tuple[RunningService, RunningService],
) -> None:
    """Enqueued on A, the socket on B: the frame crosses (on NOTIFY, in the enqueue's own
    transaction). A socket on A gets it from A's hub directly, and once: A's listener skips
    the copy A published."""
    a, b = two_instances
    user = f"fast-{uuid.uuid4().hex[:8]}"
    token = await a.user_token(user)
    async with (
        websockets.connect(ws_url(b, token)) as on_b,
        websockets.connect(ws_url(a, token)) as on_a,
    ):
        first = await _enqueue(a, "/v1/notifications", {"user_id": user, "title": "x",
                                                         "message": "m"})  # fmt: skip
        second = await _enqueue(a, "/v1/notifications", {"user_id": user, "title": "y",
                                                          "message": "m"})  # fmt: skip
        for socket in (on_b, on_a):
            got = [(await next_frame(socket, "notification"))["notification"]["id"]
                   for _ in range(2)]  # fmt: skip
            assert got == [first["id"], second["id"]]
        # Nothing more on A: a ping's answer comes before any late copy of either frame would.
        await on_a.send(json.dumps({"type": "ping"}))
        frame = json.loads(await asyncio.wait_for(on_a.recv(), 10))
        assert frame["type"] == "pong", frame


def test_a_listener_skips_what_its_own_process_published() -> None:
    async def run() -> list[str]:
        hub, delivered = ConnectionHub(), []

        class Sink:
            async def send_text(self, data: str) -> None:
                delivered.append(json.loads(data)["notification"]["id"])

        hub.add("u", Sink())
        forwarder = FrameForwarder(hub, load_frame=None)  # type: ignore[arg-type]
        frame = {"type": "notification", "notification": {"id": "mine"}}
        forwarder.forward(fanout_payload("u", frame, origin=hub.origin))
        other = {"type": "notification", "notification": {"id": "theirs"}}
        forwarder.forward(fanout_payload("u", other, origin="another-process"))
        await asyncio.sleep(0)  # deliver_soon's task: one turn of the loop
        await asyncio.sleep(0)
        return delivered

    assert asyncio.run(run()) == ["theirs"]


def test_a_frame_reads_back_as_it_was_whatever_its_values() -> None:
    """The broker's message (orjson, json for what orjson refuses) carries the frame as it was:
    non-ASCII text, a quote, an integer beyond 64 bits."""
    for metadata in ({"name": 'Zoë "Z"', "n": 1}, {"big": 2**70, "name": "é"}):
        frame = {"type": "notification", "notification": {"id": "x", "metadata": metadata}}
        message = json.loads(fanout_payload("u", frame, origin="o"))
        assert message == {"origin": "o", "user_id": "u", "frame": frame}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def graced(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningService]:
    """A service with a short grace, and a worker beside it. On SQLite a database of its own:
    a worker there publishes to its own process's sockets only (one process), so no other
    test's worker may claim these rows."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        await migrate(url)
    else:
        url = request.getfixturevalue("pg_url")
    settings: Settings = make_settings(url, websocket_grace_seconds=GRACE)
    async with running_service(settings) as service, dispatcher_beside(service):
        await listening(service)
        yield service


async def test_the_worker_republishes_once_what_nobody_acked(graced: RunningService) -> None:
    user = f"fast-{uuid.uuid4().hex[:8]}"
    async with websockets.connect(ws_url(graced, await graced.user_token(user))) as socket:
        created = await _enqueue(graced, "/v1/notifications", {"user_id": user, "title": "t",
                                                                "message": "m"})  # fmt: skip
        first = await next_frame(socket, "notification")
        again = await next_frame(socket, "notification")  # after the grace, from the worker
        assert first == again and first["notification"]["id"] == created["id"]
        # Republished without an attempt counted, and never again: nothing is due. The worker
        # gives its lease back after the publish, in a task with no event of its own to await
        # (and a session sharing SQLite may read just before the commit): poll, with a deadline.
        for _ in range(200):
            channel = await _channel(graced, created["id"])
            if channel.next_attempt_at is None and await _due(graced, created["id"]) is None:
                break
            await asyncio.sleep(0.05)
        assert (channel.status, channel.attempts, channel.next_attempt_at) == ("sent", 1, None)
        assert await _due(graced, created["id"]) is None
        await socket.send(json.dumps({"type": "ack", "id": created["id"]}))
        await next_frame(socket, "acked")
    assert (await _channel(graced, created["id"])).status == "delivered"


async def test_an_acked_frame_is_never_republished(graced: RunningService) -> None:
    user = f"fast-{uuid.uuid4().hex[:8]}"
    async with websockets.connect(ws_url(graced, await graced.user_token(user))) as socket:
        acked = await _enqueue(graced, "/v1/notifications", {"user_id": user, "title": "a",
                                                              "message": "m"})  # fmt: skip
        assert (await next_frame(socket, "notification"))["notification"]["id"] == acked["id"]
        await socket.send(json.dumps({"type": "ack", "id": acked["id"]}))
        await next_frame(socket, "acked")
        assert await _due(graced, acked["id"]) is None  # the ack took the republish away
        # A later one left unacked: its republish comes after the acked one's would have.
        control = await _enqueue(graced, "/v1/notifications", {"user_id": user, "title": "c",
                                                                "message": "m"})  # fmt: skip
        seen = [(await next_frame(socket, "notification"))["notification"]["id"]
                for _ in range(2)]  # fmt: skip
    assert seen == [control["id"], control["id"]]
    channel = await _channel(graced, acked["id"])
    assert (channel.status, channel.attempts) == ("delivered", 1)


async def test_an_opted_out_recipient_gets_no_frame(graced: RunningService) -> None:
    """Opted out of websocket for errors only: the error falls back to the worker, which skips
    it; the info after it (and a batch neighbour) take the fast path as usual."""
    user, neighbour = (f"fast-{uuid.uuid4().hex[:8]}" for _ in range(2))
    async with graced.client() as client:
        patched = await client.patch(
            f"/v1/users/{user}/preferences", json={"types": {"error": {"websocket": False}}}
        )
    assert patched.status_code == 200, patched.text
    async with contextlib.AsyncExitStack() as stack:
        socket = await stack.enter_async_context(
            websockets.connect(ws_url(graced, await graced.user_token(user)))
        )
        other = await stack.enter_async_context(
            websockets.connect(ws_url(graced, await graced.user_token(neighbour)))
        )
        batch = await _enqueue(
            graced,
            "/v1/notifications/batch",
            {
                "notifications": [
                    {"user_id": user, "title": "e", "message": "m", "notification_type": "error"},
                    {"user_id": neighbour, "title": "n", "message": "m"},
                ]
            },
        )
        error, beside = batch["notifications"]
        info = await _enqueue(graced, "/v1/notifications", {"user_id": user, "title": "i",
                                                             "message": "m"})  # fmt: skip
        # Published in order: had the error gone out, it would come first.
        assert (await next_frame(socket, "notification"))["notification"]["id"] == info["id"]
        assert (await next_frame(other, "notification"))["notification"]["id"] == beside["id"]
    assert error["delivery_status"]["websocket"]["status"] == "pending"
    async with graced.client() as client:
        for _ in range(200):
            body = (await client.get(f"/v1/notifications/{error['id']}")).json()
            if body["delivery_status"]["websocket"]["status"] != "pending":
                break
            await asyncio.sleep(0.05)  # polling the public API: there is no event to await
    assert body["delivery_status"]["websocket"]["status"] == "skipped", body
    assert "opted out" in body["delivery_status"]["websocket"]["last_error"]
    async with graced.context.sessions() as session:
        sent = await session.scalar(
            select(func.count())
            .select_from(NotificationTransition)
            .where(
                NotificationTransition.notification_id == uuid.UUID(error["id"]),
                NotificationTransition.kind == "channel.sent",
            )
        )
    assert sent == 0


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
    batch = await _enqueue(
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
