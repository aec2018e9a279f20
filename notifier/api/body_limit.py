"""Refuse request bodies over ``max_bytes`` with 413 before they reach a route, and bodies that
stall (no piece for ``body_timeout_seconds``) with 408."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notifier.api.body_deadlines import BodyDeadlines
from notifier.api.errors import error_json


class BodySizeLimit:
    """413 for a body over ``max_bytes``, declared (Content-Length) or counted (chunked).

    Before answering, the rest of the body is read and thrown away, up to ``drain_bytes`` and
    ``drain_seconds``: a server that closes a connection with unread data in it resets it, and
    the client then sees a connection error instead of the 413. Past those bounds the answer goes
    out anyway.

    A body that stops arriving (nothing for ``body_timeout_seconds`` while more is announced)
    is answered 408 and the connection closed: the header deadline (notifier/api/connections.py)
    ends once the headers are in, and a client sending its body a byte a minute would otherwise
    hold its connection for as long as it likes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        drain_bytes: int | None = None,
        drain_seconds: float = 10.0,
        body_timeout_seconds: float | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes if drain_bytes is not None else 4 * max_bytes
        self.drain_seconds = drain_seconds
        self.body_timeout_seconds = body_timeout_seconds
        self.deadlines = (
            BodyDeadlines(body_timeout_seconds) if body_timeout_seconds is not None else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.drain_bytes:
                await self.drain(receive)
            await self.refuse(send)
            return

        exchange = _Exchange(self, receive, send)
        await self.app(scope, exchange.receive, exchange.send)

    async def read_whole(self, receive: Receive, send: Send) -> list[Message] | None:
        """Every message of a body whose declared length fits, for a path that reads it outside
        this middleware (api/enqueue_fast.py): the same limit as ``_Exchange.receive`` (408
        after ``body_timeout_seconds`` with no piece), kept by one deadline per request, moved
        on by each piece (``BodyDeadlines``), where ``_Exchange`` enters a timeout per
        ``receive``. Ends at the last piece or at a disconnect; None once the 408 went out."""
        received: list[Message] = []
        deadlines = self.deadlines
        if deadlines is None:
            return await _read(receive, received, None)
        task = deadlines.begin()
        try:
            return await _read(receive, received, lambda: deadlines.moved(task))
        except asyncio.CancelledError:
            if not deadlines.passed(task):
                raise
        finally:
            deadlines.end(task)
        await self.answer(send, 408, "request_timeout", self.stalled_message())
        return None

    def stalled_message(self) -> str:
        return (
            f"the request body stopped arriving (nothing for {self.body_timeout_seconds:g} s); "
            "send it again"
        )

    async def drain(self, receive: Receive) -> None:
        budget = self.drain_bytes
        try:
            async with asyncio.timeout(self.drain_seconds):
                while budget > 0:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    budget -= len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            return

    async def refuse(self, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        await self.answer(send, 413, "payload_too_large", message)

    async def answer(self, send: Send, status: int, code: str, message: str) -> None:
        body = error_json(code, message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _read(
    receive: Receive, received: list[Message], moved: Callable[[], None] | None
) -> list[Message]:
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return received
        if moved is not None:
            moved()


class _Exchange:
    """One request as the app sees it: its body counted and timed, and once we have answered
    (413, 408), a disconnected client to the app and the app's own answer dropped."""

    def __init__(self, limit: BodySizeLimit, receive: Receive, send: Send) -> None:
        self.limit = limit
        self._receive = receive
        self._send = send
        self.received = 0
        self.response_started = False
        self.body_complete = False
        self.answered = False

    async def receive(self) -> Message:
        # Chunked bodies have no Content-Length: count what arrives. Raising here would not
        # reach us (the framework turns any error while reading the body into its own 400),
        # so answer right away and tell the app the client went away.
        if self.answered:
            return {"type": "http.disconnect"}
        if self.body_complete:
            return await self._receive()  # after the body: only a disconnect can come
        try:
            async with asyncio.timeout(self.limit.body_timeout_seconds):
                message = await self._receive()
        except TimeoutError:
            return await self._answer_instead(408)
        if message["type"] == "http.request":
            self.body_complete = not message.get("more_body", False)
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                return await self._answer_instead(413)
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return  # our answer went out already; drop whatever the app answers after it
        self.response_started = self.response_started or message["type"] == "http.response.start"
        await self._send(message)

    async def _answer_instead(self, status: int) -> Message:
        self.answered = True
        if not self.response_started:
            if status == 413:
                if not self.body_complete:
                    await self.limit.drain(self._receive)
                await self.limit.refuse(self._send)
            else:
                message = self.limit.stalled_message()
                await self.limit.answer(self._send, 408, "request_timeout", message)
        return {"type": "http.disconnect"}
