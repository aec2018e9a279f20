"""A webhook receiver: a real aiohttp server on 127.0.0.1 that records every request (headers
and body bytes, exactly as they arrived) and answers as scripted per path. Receivers verify
what they got with the ``standardwebhooks`` package, as a producer's receiver would.

    receiver.script("/hook", WebhookReply(500), WebhookReply(500))   # then 200s
    await receiver.wait_for(3, path="/hook")
    [r.verify(secret) for r in receiver.on("/hook")]
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.peers.base import HttpPeer, Recorder


@dataclass(frozen=True)
class WebhookReply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # Answer only once this is set (or the receiver stops): a receiver that is slow, or that
    # never answers (the sender's timeout fires).
    hold: asyncio.Event | None = None


@dataclass(frozen=True)
class ReceivedWebhook:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def verify(self, secret: str) -> dict[str, Any]:
        """The body, once ``standardwebhooks`` has verified its signature with ``secret``
        (raises ``WebhookVerificationError`` otherwise)."""
        return dict(Webhook(secret).verify(self.body, self.headers))


class WebhookReceiver(HttpPeer):
    # A client that gave up (timed out, or died) ends its held handler: ``holding`` counts the
    # requests a sender is still waiting on.
    handler_cancellation = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ReceivedWebhook] = []
        self.holding = 0
        self._scripts: dict[str, deque[WebhookReply]] = {}
        self._recorder = Recorder()

    def url(self, path: str = "/hook") -> str:
        return f"{self.origin}{path}"

    def script(self, path: str, *replies: WebhookReply) -> None:
        """The next answers on ``path``, in order; 200 once they are used up."""
        self._scripts.setdefault(path, deque()).extend(replies)

    def on(self, path: str) -> list[ReceivedWebhook]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, count: int, *, path: str | None = None, within: float = 10) -> None:
        """Until ``count`` requests (on ``path``, if given) have arrived."""
        await self._recorder.wait_until(
            lambda: len(self.on(path) if path else self.requests) >= count, within
        )

    async def wait_until(self, predicate: Any, within: float = 10) -> None:
        await self._recorder.wait_until(predicate, within)

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(ReceivedWebhook(request.path, headers, body))
        script = self._scripts.get(request.path)
        reply = script.popleft() if script else WebhookReply()
        self._recorder.notify()
        if reply.hold is not None:
            self.holding += 1
            self._recorder.notify()
            waiters = [asyncio.ensure_future(reply.hold.wait()), asyncio.ensure_future(self.hang())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the sender hung up (the handler is cancelled then)
                for waiter in waiters:
                    waiter.cancel()
                self.holding -= 1
                self._recorder.notify()
        return web.Response(status=reply.status, headers=reply.headers)
