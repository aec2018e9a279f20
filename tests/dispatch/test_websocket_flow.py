"""The websocket channel end to end: a real WebSocket client, a real dispatcher, both databases."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import websockets

from tests.support.service import RunningService
from tests.support.worker import dispatcher_beside
from workers.dispatcher import Dispatcher


@pytest.fixture(scope="module")
async def dispatcher(service: RunningService) -> AsyncIterator[Dispatcher]:
    async with dispatcher_beside(service) as running:
        yield running


def ws_url(service: RunningService, token: str) -> str:
    return f"ws://{service.settings.host}:{service.settings.port}/v1/ws?token={token}"


async def next_frame(socket: websockets.ClientConnection, kind: str) -> dict[str, object]:
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame["type"] == kind:
            return dict(frame)


async def wait_for_status(
    service: RunningService, notification_id: str, channel: str, status: str
) -> dict[str, object]:
    async with service.client() as client:
        for _ in range(200):
            body = (await client.get(f"/v1/notifications/{notification_id}")).json()
            if body["delivery_status"][channel]["status"] == status:
                return dict(body)
            await asyncio.sleep(0.05)  # polling the public API: there is no event to await
    raise AssertionError(f"{channel} never became {status}: {body}")


async def test_live_delivery_ack_and_replay(
    service: RunningService, dispatcher: Dispatcher
) -> None:
    user = f"ws-{uuid.uuid4().hex[:8]}"
    token = await service.user_token(user)
    async with (
        websockets.connect(ws_url(service, token)) as tab1,
        websockets.connect(ws_url(service, token)) as tab2,
    ):
        async with service.client() as client:
            created = (
                await client.post(
                    "/v1/notifications",
                    json={"user_id": user, "title": "Build done", "message": "ok"},
                )
            ).json()
        frame1 = await next_frame(tab1, "notification")
        frame2 = await next_frame(tab2, "notification")
        assert frame1["notification"]["id"] == created["id"] == frame2["notification"]["id"]  # type: ignore[index]
        assert frame1["notification"]["title"] == "Build done"  # type: ignore[index]
        await wait_for_status(service, created["id"], "websocket", "sent")

        # Not acked: a new connection replays it.
        async with websockets.connect(ws_url(service, token)) as tab3:
            replayed = await next_frame(tab3, "notification")
            assert replayed["notification"]["id"] == created["id"]  # type: ignore[index]
            await tab3.send(json.dumps({"type": "ack", "id": created["id"]}))
            await next_frame(tab3, "acked")
    body = await wait_for_status(service, created["id"], "websocket", "delivered")
    assert body["status"] == "delivered"

    # Acked: nothing to replay any more.
    async with websockets.connect(ws_url(service, token)) as tab4:
        await tab4.send(json.dumps({"type": "ping"}))
        assert (await next_frame(tab4, "pong"))["type"] == "pong"


async def test_bad_token_closes_4401(service: RunningService) -> None:
    async with websockets.connect(ws_url(service, "not-a-token")) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
