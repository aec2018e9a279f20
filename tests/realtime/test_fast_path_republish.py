"""The worker beside the fast path: it republishes once what nobody acked within the grace,
never what was acked; a recipient who opted out of websocket gets no frame."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets
from sqlalchemy import func, select

from notifier.models.transition import NotificationTransition
from notifier.settings import Settings
from tests.realtime.fast_path import GRACE, enqueue, next_attempt_at, websocket_channel
from tests.realtime.sockets import listening, next_frame, replayed, ws_url
from tests.support.databases import sqlite_url
from tests.support.service import RunningService, make_settings, migrate, running_service
from tests.support.worker import dispatcher_beside


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
        created = await enqueue(graced, "/v1/notifications", {"user_id": user, "title": "t",
                                                               "message": "m"})  # fmt: skip
        first = await next_frame(socket, "notification")
        again = await next_frame(socket, "notification")  # after the grace, from the worker
        assert first == again and first["notification"]["id"] == created["id"]
        # Republished without an attempt counted, and never again: nothing is due. The worker
        # gives its lease back after the publish, in a task with no event of its own to await
        # (and a session sharing SQLite may read just before the commit): poll, with a deadline.
        for _ in range(200):
            channel = await websocket_channel(graced, created["id"])
            if (
                channel.next_attempt_at is None
                and await next_attempt_at(graced, created["id"]) is None
            ):
                break
            await asyncio.sleep(0.05)
        assert (channel.status, channel.attempts, channel.next_attempt_at) == ("sent", 1, None)
        assert await next_attempt_at(graced, created["id"]) is None
        await socket.send(json.dumps({"type": "ack", "id": created["id"]}))
        await next_frame(socket, "acked")
    assert (await websocket_channel(graced, created["id"])).status == "delivered"


async def test_an_acked_frame_is_never_republished(graced: RunningService) -> None:
    user = f"fast-{uuid.uuid4().hex[:8]}"
    async with websockets.connect(ws_url(graced, await graced.user_token(user))) as socket:
        await replayed(socket)
        acked = await enqueue(graced, "/v1/notifications", {"user_id": user, "title": "a",
                                                             "message": "m"})  # fmt: skip
        assert (await next_frame(socket, "notification"))["notification"]["id"] == acked["id"]
        await socket.send(json.dumps({"type": "ack", "id": acked["id"]}))
        await next_frame(socket, "acked")
        assert await next_attempt_at(graced, acked["id"]) is None  # the ack took the republish away
        # A later one left unacked: its republish comes after the acked one's would have.
        control = await enqueue(graced, "/v1/notifications", {"user_id": user, "title": "c",
                                                               "message": "m"})  # fmt: skip
        seen = [(await next_frame(socket, "notification"))["notification"]["id"]
                for _ in range(2)]  # fmt: skip
    assert seen == [control["id"], control["id"]]
    channel = await websocket_channel(graced, acked["id"])
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
        batch = await enqueue(
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
        info = await enqueue(graced, "/v1/notifications", {"user_id": user, "title": "i",
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
