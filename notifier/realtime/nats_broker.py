"""The NATS fan-out broker (``NOTIFIER_FANOUT_URL=nats://…``): frames for users' sockets cross
between processes through a NATS server instead of PostgreSQL's NOTIFY, whose global lock every
notifying commit queues on (docs/architecture.md, "Fan-out brokers"; docs/scaling.md).

One connection per process (``NatsFanout``) publishes on the subject ``notifier.frames``; every
API process subscribes to it (``NatsListener``) and forwards what concerns its own sockets
(``FrameForwarder``, shared with the PostgreSQL listener). The messages are the same as NOTIFY's
(``fanout_payload``): a frame, or a reference to its row when the frame is larger than
``INLINE_LIMIT``.

NATS core delivers at most once, to whoever is subscribed at that moment:

- while the server is away the client reconnects by itself, forever, every
  ``RECONNECT_WAIT`` seconds; what a process publishes meanwhile waits in a buffer bounded by
  ``PENDING_BYTES`` and is sent on reconnecting (past that, ``publish`` raises);
- what was published while a listener was away is lost to it: after every reconnect it re-sends
  its connected users their unacked websocket notifications, as the PostgreSQL listener does;
- a listener that falls behind by more than ``SUBSCRIPTION_MESSAGES`` / ``SUBSCRIPTION_BYTES``
  is a slow consumer: NATS drops its excess, and it re-sends the unacked as after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.realtime.fanout import FrameForwarder, FrameLoader, asyncpg_dsn, fanout_payload
from notifier.realtime.hub import ConnectionHub

log = logging.getLogger("notifier.realtime")

FRAMES_SUBJECT = "notifier.frames"
# Frames up to this size travel whole. The server's own cap is 1 MB by default
# (max_payload); beyond 64 KiB a frame is a notification with a large `metadata`, rare enough
# to read back, and every API process receives every frame, so a small cap bounds what each
# one reads for users it does not hold.
INLINE_LIMIT = 64 * 1024
RECONNECT_WAIT = 0.5  # seconds between attempts while the server is away
CONNECT_TIMEOUT = 2  # seconds, one attempt
FIRST_CONTACT_TIMEOUT = 10.0  # `serve` and `worker` refuse to start past this
PENDING_BYTES = 8 * 1024 * 1024  # published while reconnecting, waiting to go out
SUBSCRIPTION_MESSAGES = 65_536  # received, not yet forwarded to sockets
SUBSCRIPTION_BYTES = 64 * 1024 * 1024
DROP_LOG_INTERVAL = 5.0  # seconds between warnings while messages are being dropped


class FanoutUnreachable(ValueError):
    """The NATS server did not answer at start; the message names the setting."""


class NatsFanout:
    """Publishes frames on ``notifier.frames``; one connection per process, opened by
    ``connect`` (the composition root calls it at start) or by the first ``publish``."""

    def __init__(self, url: str, *, database_url: str, name: str = "notifier") -> None:
        self.url = url
        self.database_url = database_url
        self._name = name
        self._client: Client | None = None
        self._connecting = asyncio.Lock()
        self._after_commit: set[asyncio.Task[None]] = set()
        # Told when the connection goes and comes back, and when a subscription dropped
        # messages: the listeners, which re-send the unacked.
        self.listeners: list[NatsListener] = []
        self.reconnects = 0
        self.dropped = 0  # messages NATS dropped for falling behind (slow consumer)
        self._drop_logged = -DROP_LOG_INTERVAL
        self._closing = False

    async def connect(self) -> Client:
        async with self._connecting:
            if self._client is not None and not self._client.is_closed:
                return self._client
            client = Client()
            try:
                # nats-py retries its first connect forever with max_reconnect_attempts=-1:
                # the deadline is ours, so that a wrong URL is told at start.
                await asyncio.wait_for(
                    client.connect(
                        servers=[self.url],
                        name=self._name,
                        connect_timeout=CONNECT_TIMEOUT,
                        # Typed int, but it is only slept on: half a second is fine.
                        reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]
                        max_reconnect_attempts=-1,
                        pending_size=PENDING_BYTES,
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                    ),
                    timeout=FIRST_CONTACT_TIMEOUT,
                )
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                with contextlib.suppress(Exception):
                    await client.close()
                raise FanoutUnreachable(
                    f"NOTIFIER_FANOUT_URL: no NATS server answered at {_without_secret(self.url)} "
                    f"within {FIRST_CONTACT_TIMEOUT:g} s ({type(exc).__name__})"
                ) from exc
            self._client, self._closing = client, False
            return client

    async def publish(
        self,
        user_id: str,
        frame: dict[str, Any],
        *,
        session: AsyncSession | None = None,
        origin: str | None = None,
    ) -> None:
        if session is None:
            await self._send(user_id, frame, origin)
            return

        def after_commit(_: object) -> None:
            # Not inside the transaction: NATS knows nothing of it, so the frame leaves once
            # the row it describes can be read (a reference is read back by other processes).
            task = asyncio.get_running_loop().create_task(self._send_logged(user_id, frame))
            self._after_commit.add(task)
            task.add_done_callback(self._after_commit.discard)

        event.listen(session.sync_session, "after_commit", after_commit, once=True)

    async def _send(self, user_id: str, frame: dict[str, Any], origin: str | None = None) -> None:
        client = self._client
        if client is None or client.is_closed:
            client = await self.connect()
        limit = min(INLINE_LIMIT, client.max_payload - 1024)
        payload = fanout_payload(user_id, frame, limit=limit, origin=origin).encode()
        await client.publish(FRAMES_SUBJECT, payload)

    async def _send_logged(self, user_id: str, frame: dict[str, Any]) -> None:
        try:
            await self._send(user_id, frame)
        except Exception as exc:  # the buffer is full or the client closed: replay covers it
            log.warning("could not publish a realtime frame on NATS: %s", type(exc).__name__)

    async def subscribe(self, handler: Any) -> Subscription:
        client = await self.connect()
        return await client.subscribe(
            FRAMES_SUBJECT,
            cb=handler,
            pending_msgs_limit=SUBSCRIPTION_MESSAGES,
            pending_bytes_limit=SUBSCRIPTION_BYTES,
        )

    def listener(self, hub: ConnectionHub, load_frame: FrameLoader) -> NatsListener:
        return NatsListener(self, hub, load_frame)

    def frame_notify(self, origin: str) -> None:
        return None  # NATS knows nothing of the enqueue's transaction: published after it

    async def aclose(self) -> None:
        for task in list(self._after_commit):
            with contextlib.suppress(Exception):
                await task
        if self._client is not None:
            self._closing = True
            with contextlib.suppress(Exception):
                await self._client.drain()  # sends what is buffered, then closes
            self._client = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            # Told once per dropped message: say it at most every few seconds.
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged >= DROP_LOG_INTERVAL:
                self._drop_logged = now
                log.warning("realtime frames dropped (%d so far): fell behind NATS", self.dropped)
            for listener in self.listeners:
                listener.missed_some()
            return
        # Before the first connection, each failed attempt lands here; `connect` says it once.
        level = logging.WARNING if self._client is not None else logging.DEBUG
        log.log(level, "NATS fan-out: %s", exc or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if self._client is None or self._closing:
            return  # a failed first attempt, or our own close: not a lost connection
        log.warning("NATS fan-out disconnected; reconnecting to %s", _without_secret(self.url))
        for listener in self.listeners:
            listener.listening.clear()

    async def _on_reconnected(self) -> None:
        # nats-py has subscribed again by now: what is published from here on arrives.
        self.reconnects += 1
        log.info("NATS fan-out reconnected")
        for listener in self.listeners:
            listener.listening.set()
            listener.missed_some()


class NatsListener(FrameForwarder):
    """Subscribes an API process to ``notifier.frames``; after a reconnect (or dropped
    messages), re-sends the connected users' unacked websocket notifications."""

    def __init__(self, fanout: NatsFanout, hub: ConnectionHub, load_frame: FrameLoader) -> None:
        super().__init__(hub, load_frame)
        self._fanout = fanout
        self._dsn = asyncpg_dsn(fanout.database_url)
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._missed = asyncio.Event()
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="realtime-nats-listener")

    def missed_some(self) -> None:
        self._missed.set()

    async def stop(self) -> None:
        if self in self._fanout.listeners:
            self._fanout.listeners.remove(self)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        await self._stop_tasks(self._task)
        self.listening.clear()

    async def _run(self) -> None:
        self._fanout.listeners.append(self)
        while self._subscription is None:
            try:
                self._subscription = await self._fanout.subscribe(self._on_message)
            except (FanoutUnreachable, nats.errors.Error) as exc:  # keep trying
                log.warning("could not subscribe to realtime frames (%s); trying again", exc)
                await asyncio.sleep(RECONNECT_WAIT)
        self.listening.set()
        while True:
            await self._missed.wait()
            self._missed.clear()
            await self._resend()

    async def _resend(self) -> None:
        """What was published while we were away (or dropped) is still `sent` in the table."""
        try:
            connection = await asyncpg.connect(self._dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("could not re-send unacked notifications: %s", type(exc).__name__)
            return
        try:
            await self.resend_unacked(connection)
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    async def _on_message(self, message: Msg) -> None:
        try:
            self.forward(message.data)
        except (ValueError, KeyError, TypeError) as exc:  # not one of ours: say so, go on
            log.warning("ignoring a malformed realtime message: %s", type(exc).__name__)


def _without_secret(url: str) -> str:
    """The URL as logs and errors may show it: no user, password or token."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
