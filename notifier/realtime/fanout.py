"""Carry frames for a user to every API process that may hold that user's sockets.

- ``LocalFanout``: one process (the embedded default): straight to the hub, after the commit
  of the transaction that produced the frame.
- ``PostgresFanout``: ``NOTIFY notifier_realtime`` with the frame; every API process LISTENs
  (``PostgresListener``) and forwards to its own hub. A NOTIFY sent inside a transaction is
  delivered only if and when it commits. Payloads are capped at 8000 bytes by PostgreSQL, so a
  large notification travels as its id and the listener loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from notifier.realtime.hub import ConnectionHub

log = logging.getLogger("notifier.realtime")

REALTIME_CHANNEL = "notifier_realtime"
MAX_NOTIFY_PAYLOAD = 7900


class Fanout(Protocol):
    async def publish(
        self, user_id: str, frame: dict[str, Any], *, session: AsyncSession | None = None
    ) -> None:
        """Send ``frame`` to the user's sockets everywhere. With ``session``, only once that
        session's transaction commits."""
        ...


class LocalFanout:
    def __init__(self, hub: ConnectionHub) -> None:
        self.hub = hub

    async def publish(
        self, user_id: str, frame: dict[str, Any], *, session: AsyncSession | None = None
    ) -> None:
        if session is None:
            await self.hub.deliver(user_id, frame)
            return

        def after_commit(_: object) -> None:
            self.hub.deliver_soon(user_id, frame)

        event.listen(session.sync_session, "after_commit", after_commit, once=True)


def _payload(user_id: str, frame: dict[str, Any]) -> str:
    payload = json.dumps({"user_id": user_id, "frame": frame}, separators=(",", ":"))
    if len(payload.encode()) <= MAX_NOTIFY_PAYLOAD:
        return payload
    notification = frame.get("notification")
    if frame.get("type") == "notification" and isinstance(notification, dict):
        return json.dumps({"user_id": user_id, "notification_id": notification["id"]})
    raise ValueError("realtime frame too large for NOTIFY")


class PostgresFanout:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def publish(
        self, user_id: str, frame: dict[str, Any], *, session: AsyncSession | None = None
    ) -> None:
        notify = select(func.pg_notify(REALTIME_CHANNEL, _payload(user_id, frame)))
        if session is not None:
            await session.execute(notify)
            return
        async with self.engine.connect() as connection:
            await connection.execute(notify)
            await connection.commit()


FrameLoader = Callable[[uuid.UUID], Awaitable[dict[str, Any] | None]]


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresListener:
    """LISTENs on a dedicated connection and forwards frames to this process's hub. Reconnects
    after the database restarts; frames sent while it was away are recovered by the clients'
    replay on reconnect (the hub drops their sockets only if they break)."""

    def __init__(
        self, database_url: str, hub: ConnectionHub, load_frame: FrameLoader, *, retry: float = 1.0
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._hub = hub
        self._load_frame = load_frame
        self._retry = retry
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self._loading: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="realtime-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("realtime listener lost its connection (%s); reconnecting", exc)
            self.listening.clear()
            await asyncio.sleep(self._retry)

    async def _listen_once(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=10)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _c: lost.set())
        try:
            await connection.add_listener(REALTIME_CHANNEL, self._on_notify)
            self.listening.set()
            while not lost.is_set():
                # A cheap heartbeat notices a dead server that never closed the socket.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=15)
                if not lost.is_set():
                    await connection.execute("SELECT 1")
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        message = json.loads(payload)
        user_id = message["user_id"]
        if not self._hub.has_user(user_id):
            return  # nobody here to tell: the usual case with many API processes
        frame = message.get("frame")
        if frame is not None:
            self._hub.deliver_soon(user_id, frame)
            return
        task = asyncio.get_running_loop().create_task(
            self._load_and_deliver(user_id, uuid.UUID(message["notification_id"]))
        )
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)

    async def _load_and_deliver(self, user_id: str, notification_id: uuid.UUID) -> None:
        frame = await self._load_frame(notification_id)
        if frame is not None:
            await self._hub.deliver(user_id, frame)
