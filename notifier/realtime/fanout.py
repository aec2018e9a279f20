"""Carry frames for a user to every API process that may hold that user's sockets.

- ``LocalFanout``: one process (the embedded default): straight to the hub, after the commit
  of the transaction that produced the frame.
- ``PostgresFanout``: ``NOTIFY notifier_realtime`` with the frame; every API process LISTENs
  (``PostgresListener``) and forwards to its own hub. A NOTIFY sent inside a transaction is
  delivered only if and when it commits. Payloads are capped at 8000 bytes by PostgreSQL, so a
  larger frame travels by reference (``FrameReference``: a notification's id, a task's
  ``task_id``) and the listener reads the row and rebuilds the frame. One user's frames keep
  their order: while one is being read back, that user's later frames wait for it.
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

from notifier.realtime.frames import FrameReference, compact_json, reference_to
from notifier.realtime.hub import ConnectionHub
from notifier.realtime.publisher import NotifyBatcher
from notifier.storage.websocket_fast_path import FrameNotify

log = logging.getLogger("notifier.realtime")

REALTIME_CHANNEL = "notifier_realtime"
MAX_NOTIFY_PAYLOAD = 7900
PUBLISH_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 2.0)  # about 6 s in all


# Reads the row a reference names and rebuilds its frame; None when there is nothing to send
# (the row is gone, not this user's, or a later version whose own frame follows).
FrameLoader = Callable[[str, FrameReference], Awaitable[dict[str, Any] | None]]


class FanoutListener(Protocol):
    """The receiving side of a broker in an API process: forwards what any process published
    to this process's hub (docs/architecture.md, "Fan-out brokers")."""

    listening: asyncio.Event  # set while frames published from now on will arrive

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class Fanout(Protocol):
    """One broker: ``LocalFanout`` (one process), ``PostgresFanout`` (NOTIFY) or
    ``NatsFanout`` (``notifier/realtime/nats_broker.py``); the composition root picks it."""

    async def publish(
        self,
        user_id: str,
        frame: dict[str, Any],
        *,
        session: AsyncSession | None = None,
        origin: str | None = None,
    ) -> None:
        """Send ``frame`` to the user's sockets everywhere. With ``session``, only once that
        session's transaction commits. With ``origin`` (a hub's), everywhere but that hub's
        process, which delivered it itself."""
        ...

    def frame_notify(self, origin: str) -> FrameNotify | None:
        """How the enqueue's own transaction carries its frames (PostgreSQL NOTIFY), so that
        the fast path costs no broker transaction of its own; None: ``publish`` them after the
        commit."""
        ...

    def listener(self, hub: ConnectionHub, load_frame: FrameLoader) -> FanoutListener | None:
        """What an API process runs to receive frames; None when ``publish`` reaches the hub
        itself."""
        ...

    async def aclose(self) -> None: ...


class LocalFanout:
    def __init__(self, hub: ConnectionHub) -> None:
        self.hub = hub

    async def publish(
        self,
        user_id: str,
        frame: dict[str, Any],
        *,
        session: AsyncSession | None = None,
        origin: str | None = None,
    ) -> None:
        if origin is not None:
            return  # one process: its hub has it already
        if session is None:
            await self.hub.deliver(user_id, frame)
            return

        def after_commit(_: object) -> None:
            self.hub.deliver_soon(user_id, frame)

        event.listen(session.sync_session, "after_commit", after_commit, once=True)

    def listener(self, hub: ConnectionHub, load_frame: FrameLoader) -> None:
        return None

    def frame_notify(self, origin: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


def fanout_payload(
    user_id: str,
    frame: dict[str, Any],
    *,
    limit: int = MAX_NOTIFY_PAYLOAD,
    origin: str | None = None,
) -> str:
    """The message every broker carries: the frame, or a reference to its row when the frame
    is larger than ``limit`` bytes; ``origin``: the publishing process's hub, whose listener
    skips it."""
    # The origin first: a listener recognises its own process's messages by their first bytes,
    # without parsing them (``origin_prefix``).
    message: dict[str, Any] = {} if origin is None else {"origin": origin}
    message.update(user_id=user_id, frame=frame)
    payload = compact_json(message)
    if len(payload.encode()) <= limit:
        return payload
    reference = reference_to(frame)
    if reference is None:  # every frame we publish is made from a row; this one was not
        raise ValueError(f"realtime frame of type {frame.get('type')!r} too large to publish")
    # user_id and task_id are at most 255 characters each: a reference always fits.
    referenced = {} if origin is None else {"origin": origin}
    referenced.update(reference.to_message(user_id))
    return compact_json(referenced)


def origin_prefix(origin: str) -> str:
    """How every message ``fanout_payload`` makes for ``origin`` begins."""
    return compact_json({"origin": origin})[:-1] + ","


class PostgresFanout:
    """Without a session, ``publish`` sends the NOTIFY itself, batched with the frames other
    tasks publish at the same moment (``NotifyBatcher``), and tries again for a few seconds
    while the database is unreachable (restarting, out of connections): the worker calls it
    after recording ``sent``, and a frame that never goes out reaches a user whose socket stays
    open only on their next reconnect. A repeat is harmless: clients de-duplicate frames by
    id."""

    def __init__(
        self, engine: AsyncEngine, *, retry_delays: tuple[float, ...] = PUBLISH_RETRY_DELAYS
    ) -> None:
        self.engine = engine
        self._batcher = NotifyBatcher(engine, REALTIME_CHANNEL, retry_delays=retry_delays)

    async def publish(
        self,
        user_id: str,
        frame: dict[str, Any],
        *,
        session: AsyncSession | None = None,
        origin: str | None = None,
    ) -> None:
        payload = fanout_payload(user_id, frame, origin=origin)
        if session is not None:
            await session.execute(select(func.pg_notify(REALTIME_CHANNEL, payload)))
            return
        await self._batcher.publish(payload)

    def listener(self, hub: ConnectionHub, load_frame: FrameLoader) -> PostgresListener:
        url = self.engine.url.render_as_string(hide_password=False)
        return PostgresListener(url, hub, load_frame)

    def frame_notify(self, origin: str) -> FrameNotify:
        # The enqueue's commit already takes PostgreSQL's NOTIFY lock (it wakes the workers):
        # its frames ride that transaction instead of taking the lock again in one of their own.
        return FrameNotify(
            REALTIME_CHANNEL, lambda user_id, frame: fanout_payload(user_id, frame, origin=origin)
        )

    async def aclose(self) -> None:
        return None  # the engine is its owner's to dispose


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


# The websocket notifications of some users that went out (``sent``) but were never acked,
# oldest first: what a socket that stayed open may have missed while the LISTEN connection was
# down. Same selection as the replay on connect (storage/realtime.py).
_UNACKED_FOR_USERS = """
SELECT n.id, n.user_id FROM notifications n
JOIN notification_deliveries d ON d.notification_id = n.id
WHERE n.user_id = ANY($1::text[]) AND d.channel = 'websocket' AND d.status = 'sent'
ORDER BY n.created_at, n.id
LIMIT $2
"""
CATCH_UP_LIMIT = 5000


class FrameForwarder:
    """Forwards the messages of any broker (``fanout_payload``) to this process's hub: a frame
    at once, a reference read back first, one user's frames in publish order. A broker's
    messages sent while its listener was away are lost to it, and a socket that stayed open
    meanwhile would never see those frames (the replay runs only when a client connects), so
    after every reconnect the listener calls ``resend_unacked``: the connected users get their
    unacked websocket notifications again, as the replay on connect would (clients de-duplicate
    by id)."""

    def __init__(self, hub: ConnectionHub, load_frame: FrameLoader) -> None:
        self._hub = hub
        self._load_frame = load_frame
        self._own_prefix = origin_prefix(hub.origin)
        self._loading: set[asyncio.Task[None]] = set()
        # user_id → the last of that user's frames still being read back or waiting its turn.
        self._in_order: dict[str, asyncio.Task[None]] = {}

    async def _stop_tasks(self, *others: asyncio.Task[None] | None) -> None:
        tasks = [t for t in (*others, *self._loading) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def resend_unacked(self, connection: asyncpg.Connection) -> None:
        users = self._hub.connected_users()
        if not users:
            return
        rows = await connection.fetch(_UNACKED_FOR_USERS, users, CATCH_UP_LIMIT)
        if not rows:
            return
        log.info("re-sending %d unacked websocket notifications after reconnecting", len(rows))
        task = asyncio.get_running_loop().create_task(
            self._deliver_all([(str(r["user_id"]), r["id"]) for r in rows])
        )
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)

    async def _deliver_all(self, items: list[tuple[str, uuid.UUID]]) -> None:
        for user_id, notification_id in items:
            if not self._hub.has_user(user_id):
                continue
            try:
                await self._load_and_deliver(
                    user_id, FrameReference("notification", str(notification_id))
                )
            except Exception as exc:  # the database went away again: the next reconnect retries
                log.warning("could not re-send unacked notifications: %s", type(exc).__name__)
                return

    def forward(self, payload: str | bytes) -> None:
        text = payload.decode() if isinstance(payload, bytes) else payload
        if text.startswith(self._own_prefix):
            return  # this process published it, and delivered it to its sockets itself
        message = json.loads(text)
        user_id = message["user_id"]
        if not self._hub.has_user(user_id):
            return  # nobody here to tell: the usual case with many API processes
        frame = message.get("frame")
        earlier = self._in_order.get(user_id)
        if frame is not None and earlier is None:
            self._hub.deliver_soon(user_id, frame)  # the usual case: no task of our own
            return
        reference = None if frame is not None else FrameReference.from_message(message)
        if frame is None and reference is None:
            log.warning("ignoring a realtime message of an unknown form")
            return
        # A frame read back from the database, or one that must wait for such a frame of the
        # same user: each waits for the one before it, so the user sees them in publish order.
        task = asyncio.get_running_loop().create_task(
            self._deliver_after(earlier, user_id, frame, reference)
        )
        self._in_order[user_id] = task
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)
        task.add_done_callback(lambda done: self._forget(user_id, done))

    def _forget(self, user_id: str, done: asyncio.Task[None]) -> None:
        if self._in_order.get(user_id) is done:
            del self._in_order[user_id]

    async def _deliver_after(
        self,
        earlier: asyncio.Task[None] | None,
        user_id: str,
        frame: dict[str, Any] | None,
        reference: FrameReference | None,
    ) -> None:
        if earlier is not None:
            # Its failure is its own (logged there); this frame still goes out.
            await asyncio.wait([earlier])
        try:
            if frame is not None:
                await self._hub.deliver(user_id, frame)
            elif reference is not None:
                await self._load_and_deliver(user_id, reference)
        except Exception as exc:  # the database is unreachable: this frame is lost to sockets
            log.warning("could not read back a realtime frame: %s", type(exc).__name__)

    async def _load_and_deliver(self, user_id: str, reference: FrameReference) -> None:
        frame = await self._load_frame(user_id, reference)
        if frame is not None:
            await self._hub.deliver(user_id, frame)


class PostgresListener(FrameForwarder):
    """LISTENs on a dedicated connection and forwards frames to this process's hub. Reconnects
    after the database restarts, then re-sends what its users may have missed
    (``FrameForwarder.resend_unacked``)."""

    def __init__(
        self, database_url: str, hub: ConnectionHub, load_frame: FrameLoader, *, retry: float = 1.0
    ) -> None:
        super().__init__(hub, load_frame)
        self._dsn = asyncpg_dsn(database_url)
        self._retry = retry
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self._connections = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="realtime-listener")

    async def stop(self) -> None:
        await self._stop_tasks(self._task)

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
            self._connections += 1
            if self._connections > 1:
                # Listening again: whatever is published from now on arrives live; what was
                # published while we were away is still `sent` in the table.
                await self.resend_unacked(connection)
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
        self.forward(payload)
