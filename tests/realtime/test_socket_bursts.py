"""Many sockets at once against a real service on both databases: a wave of connects gets each
user's own replay, and a burst of acks settles every one (the endpoint coalesces both)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from tests.support.service import RunningService
from tests.support.worker import dispatcher_beside
from workers.dispatcher import Dispatcher

USERS = 30


@pytest.fixture(scope="module")
async def dispatcher(service: RunningService) -> AsyncIterator[Dispatcher]:
    async with dispatcher_beside(service) as running:
        yield running


def ws_url(service: RunningService, token: str) -> str:
    return f"ws://{service.settings.host}:{service.settings.port}/v1/ws?token={token}"


async def frames(
    socket: websockets.ClientConnection, kind: str, count: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while len(found) < count:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 20))
        if frame["type"] == kind:
            found.append(frame)
    return found


async def statuses(service: RunningService, ids: list[str]) -> set[str]:
    async with service.client() as client:
        bodies = [(await client.get(f"/v1/notifications/{i}")).json() for i in ids]
    return {b["delivery_status"]["websocket"]["status"] for b in bodies}


async def test_a_wave_of_connects_replays_and_a_burst_of_acks_settles(
    service: RunningService, dispatcher: Dispatcher
) -> None:
    prefix = uuid.uuid4().hex[:8]
    users = [f"burst-{prefix}-{i}" for i in range(USERS)]
    tokens = [await service.user_token(u) for u in users]
    async with service.client() as client:
        response = await client.post(
            "/v1/notifications/batch",
            json={
                "notifications": [
                    {"user_id": u, "title": f"for {u} #{n}", "message": "m"}
                    for u in users
                    for n in range(2)
                ]
            },
        )
    created = response.json()
    by_user: dict[str, list[str]] = {}
    for item in created["notifications"] if isinstance(created, dict) else created:
        by_user.setdefault(item["user_id"], []).append(item["id"])
    ids = [i for u in users for i in by_user[u]]
    # Published with nobody connected: all `sent`, waiting for a replay.
    for _ in range(400):
        if await statuses(service, ids) == {"sent"}:
            break
        await asyncio.sleep(0.05)  # polling the public API: there is no event to await
    assert await statuses(service, ids) == {"sent"}

    sockets = await asyncio.gather(*(websockets.connect(ws_url(service, t)) for t in tokens))
    try:
        replays = await asyncio.gather(*(frames(s, "notification", 2) for s in sockets))
        for user, replay in zip(users, replays, strict=True):
            assert [f["notification"]["id"] for f in replay] == by_user[user]  # oldest first
        await asyncio.gather(
            *(
                s.send(json.dumps({"type": "ack", "id": f["notification"]["id"]}))
                for s, replay in zip(sockets, replays, strict=True)
                for f in replay
            )
        )
        await asyncio.gather(*(frames(s, "acked", 2) for s in sockets))
    finally:
        await asyncio.gather(*(s.close() for s in sockets))
    assert await statuses(service, ids) == {"delivered"}
