"""An ack waiting for the database does not stop its socket from being read.

Under load the acks' transactions queue up; if the socket's read loop waited for each, it would
stop reading the client's frames, and with them the pongs to the server's keepalive pings: the
server closed every socket "keepalive ping timeout" (bench scenario 3). Here the database is
made to hold the ack (another connection holds the lock the ack needs), and the same socket must
still answer a ping at once; once the lock goes, the ack is recorded and confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import websockets

from notifier.realtime.fanout import asyncpg_dsn
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


@contextlib.asynccontextmanager
async def row_locked(database_url: str, notification_id: str) -> AsyncIterator[None]:
    """Hold what the ack's transaction must take: the notification's row lock on PostgreSQL,
    the database's write lock on SQLite."""
    if database_url.startswith("sqlite"):
        async with _sqlite_write_lock(database_url.split("///", 1)[1]):
            yield
        return
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with connection.transaction():
            await connection.execute(
                "SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", uuid.UUID(notification_id)
            )
            yield
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def _sqlite_write_lock(path: str) -> AsyncIterator[None]:
    # Taken off the event loop: the worker beside us may be mid-transaction (recording the
    # frame as sent), and it needs this loop to reach its COMMIT. Waiting for the lock on the
    # loop itself would deadlock until the busy timeout ("database is locked").
    connection = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    try:
        await asyncio.to_thread(connection.execute, "BEGIN IMMEDIATE")
        yield
        await asyncio.to_thread(connection.execute, "ROLLBACK")
    finally:
        connection.close()


async def test_a_pending_ack_does_not_hold_up_the_socket(
    service: RunningService, dispatcher: Dispatcher
) -> None:
    user = f"ack-loop-{uuid.uuid4().hex[:8]}"
    token = await service.user_token(user)
    url = f"ws://{service.settings.host}:{service.settings.port}/v1/ws?token={token}"
    async with websockets.connect(url) as socket:
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
