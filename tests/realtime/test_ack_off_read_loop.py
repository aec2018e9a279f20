"""An ack waiting for the database does not stop its socket from being read.

Under load the acks' transactions queue up; if the socket's read loop waited for each, it would
stop reading the client's frames, and with them the pongs to the server's keepalive pings: the
server closed every socket "keepalive ping timeout" (bench scenario 3). Here the database is
made to hold the ack (another connection holds the lock the ack needs), and the same socket must
still answer a ping at once; once the lock goes, the ack is recorded and confirmed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from tests.realtime.sockets import row_locked
from tests.support.service import RunningService
from tests.support.worker import dispatcher_beside
from workers.dispatcher import Dispatcher


@pytest.fixture(scope="module")
async def dispatcher(service: RunningService) -> AsyncIterator[Dispatcher]:
    async with dispatcher_beside(service) as running:
        yield running


async def next_frame(socket: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 20))
        if frame["type"] == kind:
            return dict(frame)
        assert frame["type"] != "acked", "the ack went through while its row was locked"


async def test_a_pending_ack_does_not_hold_up_the_socket(
    service: RunningService, dispatcher: Dispatcher
) -> None:
    user = f"ack-loop-{uuid.uuid4().hex[:8]}"
    token = await service.user_token(user)
    url = f"ws://{service.settings.host}:{service.settings.port}/v1/ws?token={token}"
    async with websockets.connect(url) as socket:
        # The read loop starts once the replay on connect is over; that needs the database too
        # (on SQLite, the very lock held below), so it must be over before the lock is taken.
        await socket.send(json.dumps({"type": "ping"}))
        await next_frame(socket, "pong")
        async with service.client() as client:
            created = (
                await client.post(
                    "/v1/notifications", json={"user_id": user, "title": "t", "message": "m"}
                )
            ).json()
        frame = await next_frame(socket, "notification")
        assert frame["notification"]["id"] == created["id"]

        async with row_locked(service.settings.database_url, created["id"]):
            await socket.send(json.dumps({"type": "ack", "id": created["id"]}))
            await socket.send(json.dumps({"type": "ping"}))
            # Answered while the ack still waits for the lock (next_frame fails on "acked").
            await next_frame(socket, "pong")
        acked = await next_frame(socket, "acked")
        assert acked["id"] == created["id"]

    async with service.client() as client:
        body = (await client.get(f"/v1/notifications/{created['id']}")).json()
    assert body["delivery_status"]["websocket"]["status"] == "delivered"
