"""The open WebSockets of this API process, by user."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from notifier.realtime.frames import compact_json

log = logging.getLogger("notifier.realtime")


class FrameSink(Protocol):
    async def send_text(self, data: str) -> None: ...


class ConnectionHub:
    """user_id → that user's open sockets (one per tab). Sends to one slow or dead socket do
    not hold up the others."""

    def __init__(self, *, send_timeout: float = 5.0) -> None:
        # Lists, not sets: a user has a socket or two, and an empty set alone is 216 bytes
        # against a list's 56, times 10k users held at once.
        self._sockets: dict[str, list[FrameSink]] = defaultdict(list)
        self._send_timeout = send_timeout
        self._pending: set[asyncio.Task[Any]] = set()
        # Names this API process in the fan-out's messages: its listener skips the frames it
        # published itself, which it delivered to its own sockets directly (the enqueue's fast
        # path, docs/architecture.md "WebSocket fast path").
        self.origin = uuid.uuid4().hex

    @property
    def connection_count(self) -> int:
        return sum(len(s) for s in self._sockets.values())

    def add(self, user_id: str, sink: FrameSink) -> None:
        sockets = self._sockets[user_id]
        if sink not in sockets:
            sockets.append(sink)

    def discard(self, user_id: str, sink: FrameSink) -> None:
        sockets = self._sockets.get(user_id)
        if sockets is not None and sink in sockets:
            sockets.remove(sink)
            if not sockets:
                del self._sockets[user_id]

    def connected_users(self) -> list[str]:
        return list(self._sockets)

    def has_user(self, user_id: str) -> bool:
        return user_id in self._sockets

    def deliver_soon(
        self, user_id: str, frame: dict[str, Any], *, then: Callable[[], None] | None = None
    ) -> None:
        """Schedule ``deliver`` from synchronous code (a commit hook, a LISTEN callback), a task
        per frame (one slow socket holds up no other frame); ``then`` is called once it is
        written."""
        self._spawn(
            self.deliver(user_id, frame) if then is None else _then(self, user_id, frame, then)
        )

    async def deliver(self, user_id: str, frame: dict[str, Any]) -> int:
        """Send ``frame`` to every socket of ``user_id``; returns how many took it."""
        sockets = list(self._sockets.get(user_id, ()))
        if not sockets:
            return 0
        text = compact_json(frame)  # once for all the user's sockets
        if len(sockets) == 1:  # the usual case: no gather, no extra task per frame
            results: list[BaseException | None] = [await self._send(sockets[0], text)]
        else:
            results = await asyncio.gather(*(self._send(s, text) for s in sockets))
        delivered = 0
        for sink, error in zip(sockets, results, strict=True):
            if error is None:
                delivered += 1
                continue
            log.info("dropping a websocket that failed a send: %s", type(error).__name__)
            # A socket left open but out of the hub would never get a frame again; closed,
            # its client reconnects and gets the replay.
            self.drop(user_id, sink, code=1011, reason="send failed")
        return delivered

    def drop(self, user_id: str, sink: FrameSink, *, code: int, reason: str) -> None:
        """Take the socket out of the hub at once (no frame reaches it from now on), and close
        it with ``code`` in the background. Callable from synchronous code (a timer)."""
        self.discard(user_id, sink)
        close = getattr(sink, "close", None)
        if close is not None:
            self._spawn(_close_quietly(close, code, reason))

    async def _send(self, sink: FrameSink, text: str) -> BaseException | None:
        try:
            async with asyncio.timeout(self._send_timeout):
                await sink.send_text(text)
        except Exception as exc:
            return exc
        return None

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


async def _then(
    hub: ConnectionHub, user_id: str, frame: dict[str, Any], then: Callable[[], None]
) -> None:
    await hub.deliver(user_id, frame)
    then()


async def _close_quietly(close: Callable[..., Awaitable[None]], code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await close(code=code, reason=reason)
