"""What the realtime tests share: a user's socket URL on a running service, reading frames of
one kind off a real WebSocket client, and holding the lock an ack's transaction needs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import websockets

from notifier.realtime.fanout import asyncpg_dsn
from tests.support.service import RunningService


def ws_url(service: RunningService, token: str) -> str:
    return f"ws://{service.settings.host}:{service.settings.port}/v1/ws?token={token}"


async def listening(service: RunningService) -> None:
    """On PostgreSQL frames reach sockets through the LISTEN connection: wait until it is up."""
    if service.context.listener is not None:
        await asyncio.wait_for(service.context.listener.listening.wait(), 10)


async def next_frame(socket: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind`` (within 10 s); frames of other types are passed over."""
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame["type"] == kind:
            return dict(frame)


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


async def replayed(socket: websockets.ClientConnection) -> None:
    """Wait until the server has replayed the user's unacked notifications: it answers client
    frames only after the replay, so the pong to a ping marks its end. A notification enqueued
    earlier may arrive twice, live and replayed (clients drop the repeat by id)."""
    await socket.send(json.dumps({"type": "ping"}))
    await next_frame(socket, "pong")
