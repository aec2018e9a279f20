"""Refuse request bodies over ``max_bytes`` with 413 before they reach a route."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notifier.api.errors import error_json


class BodySizeLimit:
    """413 for a body over ``max_bytes``, declared (Content-Length) or counted (chunked).

    Before answering, the rest of the body is read and thrown away, up to ``drain_bytes`` and
    ``drain_seconds``: a server that closes a connection with unread data in it resets it, and
    the client then sees a connection error instead of the 413. Past those bounds the answer goes
    out anyway.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        drain_bytes: int | None = None,
        drain_seconds: float = 10.0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes if drain_bytes is not None else 4 * max_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.drain_bytes:
                await self._drain(receive)
            await self._refuse(send)
            return

        received = 0
        response_started = False
        refused = False

        async def counting_receive() -> Message:
            # Chunked bodies have no Content-Length: count what arrives. Raising here would not
            # reach us (the framework turns any error while reading the body into its own 400),
            # so answer 413 right away and tell the app the client went away.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not response_started:
                        if message.get("more_body", False):
                            await self._drain(receive)
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the 413 went out already; drop whatever the app answers after it
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, tracking_send)

    async def _drain(self, receive: Receive) -> None:
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

    async def _refuse(self, send: Send) -> None:
        body = error_json(
            "payload_too_large", f"the request body is larger than {self.max_bytes} bytes"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
