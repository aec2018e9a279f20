"""The open WebSockets of this API process, by user."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from typing import Any, Protocol

log = logging.getLogger("notifier.realtime")


class FrameSink(Protocol):
    async def send_text(self, data: str) -> None: ...


class ConnectionHub:
    """user_id → that user's open sockets (one per tab). Sends to one slow or dead socket do
    not hold up the others."""

    def __init__(self, *, send_timeout: float = 5.0) -> None:
        self._sockets: dict[str, set[FrameSink]] = defaultdict(set)
        self._send_timeout = send_timeout
        self._pending: set[asyncio.Task[int]] = set()

    @property
    def connection_count(self) -> int:
        return sum(len(s) for s in self._sockets.values())

    def add(self, user_id: str, sink: FrameSink) -> None:
        self._sockets[user_id].add(sink)

    def discard(self, user_id: str, sink: FrameSink) -> None:
        sockets = self._sockets.get(user_id)
        if sockets is not None:
            sockets.discard(sink)
            if not sockets:
                del self._sockets[user_id]

    def connected_users(self) -> list[str]:
        return list(self._sockets)

    def has_user(self, user_id: str) -> bool:
        return user_id in self._sockets

    def deliver_soon(self, user_id: str, frame: dict[str, Any]) -> None:
        """Schedule ``deliver`` from synchronous code (a commit hook, a LISTEN callback)."""
        task = asyncio.get_running_loop().create_task(self.deliver(user_id, frame))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def deliver(self, user_id: str, frame: dict[str, Any]) -> int:
        """Send ``frame`` to every socket of ``user_id``; returns how many took it."""
        sockets = list(self._sockets.get(user_id, ()))
        if not sockets:
            return 0
        text = json.dumps(frame, separators=(",", ":"))
        results = await asyncio.gather(
            *(asyncio.wait_for(s.send_text(text), self._send_timeout) for s in sockets),
            return_exceptions=True,
        )
        delivered = 0
        for sink, result in zip(sockets, results, strict=True):
            if isinstance(result, BaseException):
                log.info("dropping a websocket that failed a send: %s", type(result).__name__)
                self.discard(user_id, sink)
            else:
                delivered += 1
        return delivered
