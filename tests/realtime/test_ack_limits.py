"""Client acks are answered with what they did, and one socket's acks are bounded.

Reproduced on 02f835d: an ack of another user's notification, or of a random id, recorded
nothing and was answered ``acked``; and one socket could send acks without limit (100k random
acks: +128 MiB RSS, every other socket's inbox held up meanwhile), each becoming a task waiting
for the database. Real uvicorn servers and real WebSocket clients, on both databases.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from notifier.realtime.acks import AckLimits, SocketAcks
from notifier.settings import Settings
from notifier.storage.realtime import REPLAY_LIMIT
from tests.realtime.sockets import next_frame, row_locked, ws_url
from tests.support.service import RunningService, make_settings, running_service


async def notify(service: RunningService, user: str, **fields: Any) -> str:
    body = {"user_id": user, "title": "t", "message": "m", **fields}
    async with service.client() as client:
        response = await client.post("/v1/notifications", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def websocket_status(service: RunningService, notification_id: str) -> str:
    async with service.client() as client:
        body = (await client.get(f"/v1/notifications/{notification_id}")).json()
    return str(body["delivery_status"]["websocket"]["status"])


async def ack(socket: websockets.ClientConnection, ident: str) -> dict[str, Any]:
    """Send one ack and return its answer (``acked`` or an error frame naming the id)."""
    await socket.send(json.dumps({"type": "ack", "id": ident}))
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame["type"] in ("acked", "error") and frame.get("id") == ident:
            return dict(frame)


async def test_an_ack_is_answered_with_what_it_did(service: RunningService) -> None:
    me, other = f"ack-{uuid.uuid4().hex[:8]}", f"ack-{uuid.uuid4().hex[:8]}"
    mine = await notify(service, me)
    theirs = await notify(service, other)
    email_only = await notify(service, me, channels=["email"])
    token = await service.user_token(me)
    async with websockets.connect(ws_url(service, token)) as socket:
        assert await ack(socket, mine) == {"type": "acked", "id": mine}
        # A repeat of one's own ack is idempotent: answered acked again.
        assert await ack(socket, mine) == {"type": "acked", "id": mine}

        answer = await ack(socket, theirs)
        assert answer["type"] == "error" and answer["error"]["code"] == "not_found"
        random_id = str(uuid.uuid4())
        answer = await ack(socket, random_id)
        assert answer["type"] == "error" and answer["error"]["code"] == "not_found"
        # Another user's notification and a random id read the same: nothing tells them apart.
        assert answer["error"]["message"] == (await ack(socket, theirs))["error"]["message"]

        answer = await ack(socket, email_only)
        assert answer["type"] == "error" and answer["error"]["code"] == "not_ackable"

        # The socket is still open and answering.
        await socket.send(json.dumps({"type": "ping"}))
        await next_frame(socket, "pong")
    assert await websocket_status(service, mine) == "delivered"
    assert await websocket_status(service, theirs) != "delivered"


async def test_a_socket_that_sends_too_many_acks_is_closed_with_1008(database_url: str) -> None:
    burst = REPLAY_LIMIT  # the smallest burst allowed: a full replay acked at once
    settings = make_settings(database_url, ws_ack_burst=burst, ws_ack_per_second=1)
    async with running_service(settings) as service:
        token = await service.user_token(f"flood-{uuid.uuid4().hex[:8]}")
        bystander = await service.user_token(f"calm-{uuid.uuid4().hex[:8]}")
        async with (
            websockets.connect(ws_url(service, token)) as flood,
            websockets.connect(ws_url(service, bystander)) as calm,
        ):
            sent = burst + 100
            for _ in range(sent):
                try:
                    await flood.send(json.dumps({"type": "ack", "id": str(uuid.uuid4())}))
                except ConnectionClosed:
                    break
            answers = 0
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frame = json.loads(await asyncio.wait_for(flood.recv(), 20))
                    assert frame["type"] == "error" and frame["error"]["code"] == "not_found"
                    answers += 1
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            # The close came once the allowance was spent: at most the burst (and a token or
            # two of refill at 1/s) was taken; answers still in flight then were not sent.
            assert answers <= burst + 5

            # Another socket of the same process is unaffected.
            await calm.send(json.dumps({"type": "ping"}))
            await next_frame(calm, "pong")


async def test_acks_waiting_for_the_database_are_bounded_per_socket(
    service: RunningService,
) -> None:
    in_flight = service.settings.ws_acks_in_flight
    user = f"inflight-{uuid.uuid4().hex[:8]}"
    mine = await notify(service, user)
    token = await service.user_token(user)
    async with websockets.connect(ws_url(service, token)) as socket:
        # Answered once the replay on connect is over (it needs the database too): from here
        # on only the acks wait for the lock.
        await socket.send(json.dumps({"type": "ping"}))
        await next_frame(socket, "pong")
        queries = service.app.state.socket_queries  # made by the first socket of the app
        sent = in_flight + 20
        async with row_locked(service.settings.database_url, mine):
            for _ in range(sent):
                await socket.send(json.dumps({"type": "ack", "id": mine}))
            # Polled (the count has no event): it must reach the cap and never pass it while
            # every ack waits for the lock.
            most = 0
            async with asyncio.timeout(10):
                while most < in_flight:
                    most = max(most, queries.acks_in_flight)
                    await asyncio.sleep(0.01)
            for _ in range(20):
                most = max(most, queries.acks_in_flight)
                await asyncio.sleep(0.01)
            assert most == in_flight
        # None was dropped: once the lock goes, every ack is answered.
        answers = [await next_frame(socket, "acked") for _ in range(sent)]
        assert {a["id"] for a in answers} == {mine}
    assert await websocket_status(service, mine) == "delivered"


def test_the_burst_covers_a_full_replay() -> None:
    with pytest.raises(ValueError, match="ws_ack_burst"):
        Settings(ws_ack_burst=REPLAY_LIMIT - 1)
    limits = AckLimits(per_second=1, burst=REPLAY_LIMIT, in_flight=1, clock=lambda: 0.0)
    acks = SocketAcks(limits)
    assert all(acks.take() for _ in range(REPLAY_LIMIT))
    assert not acks.take()
