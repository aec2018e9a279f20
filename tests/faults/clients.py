"""End users' WebSocket clients that behave like the browser app: stay connected (reconnecting
after a close or a refused connection), ack every notification frame, and de-duplicate by id.

    socket = UserSocket("alice", f"{api.ws_base}/v1/ws?token={token}")
    socket.start()
    ...
    socket.received   # notification id -> time.time() it first arrived
    await socket.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import websockets
from websockets.exceptions import InvalidHandshake, WebSocketException

RECONNECT_DELAY = 0.25  # between attempts: the API or its database may be down for a while


class UserSocket:
    def __init__(
        self, user_id: str, url: str, *, ack_limiter: asyncio.Semaphore | None = None
    ) -> None:
        self.user_id = user_id
        self.url = url
        # Shared by many clients, it caps the acks awaiting the server's "acked" at once (each
        # costs the API a database transaction): keeps a suite's footprint on a shared server
        # small. Acks go out from a task of their own, so reading never waits for a permit.
        self.ack_limiter = ack_limiter
        self._awaiting: set[str] = set()
        self.received: dict[str, float] = {}
        self.frames = 0  # notification frames, repeats included
        self.arrivals: list[tuple[str, float]] = []  # every notification frame, in order
        self.connects = 0
        self.acks_sent = 0
        self.open = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ws-{self.user_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            to_ack: asyncio.Queue[str] = asyncio.Queue()
            acker: asyncio.Task[None] | None = None
            try:
                async with websockets.connect(
                    self.url, open_timeout=5, close_timeout=2, max_size=2**20
                ) as socket:
                    self.connects += 1
                    self.open.set()
                    acker = asyncio.create_task(self._ack_forever(socket, to_ack))
                    async for text in socket:
                        self._on_frame(text, to_ack)
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException):
                pass
            finally:
                if acker is not None:
                    acker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await acker
                self._release_all()
            self.open.clear()
            await asyncio.sleep(RECONNECT_DELAY)

    def _on_frame(self, text: str | bytes, to_ack: asyncio.Queue[str]) -> None:
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "acked":
            self._release(str(frame.get("id")))
            return
        if kind != "notification":
            return
        notification_id = str(frame["notification"]["id"])
        now = time.time()
        self.frames += 1
        self.arrivals.append((notification_id, now))
        self.received.setdefault(notification_id, now)
        # Ack even a repeat: the first ack may have been lost with the server's database.
        to_ack.put_nowait(notification_id)

    async def _ack_forever(
        self, socket: websockets.ClientConnection, to_ack: asyncio.Queue[str]
    ) -> None:
        while True:
            notification_id = await to_ack.get()
            if self.ack_limiter is not None:
                if notification_id in self._awaiting:
                    continue  # that ack is still on its way
                await self.ack_limiter.acquire()
                self._awaiting.add(notification_id)
            try:
                await socket.send(json.dumps({"type": "ack", "id": notification_id}))
            except WebSocketException:
                return  # the reader sees the close and reconnects
            self.acks_sent += 1

    def _release(self, notification_id: str) -> None:
        if self.ack_limiter is not None and notification_id in self._awaiting:
            self._awaiting.discard(notification_id)
            self.ack_limiter.release()

    def _release_all(self) -> None:
        for notification_id in list(self._awaiting):
            self._release(notification_id)
