"""The shared peers (tests/peers), plus what the fault suite and the soak need on top: the time
each message arrived (to tell a resend inside the documented window from one after a recorded
success) and an SMTP gate that holds messages mid-send, so a fault can strike while sends are
in flight.

A gated SMTP peer lets the first ``gate_after`` messages through, then holds every further DATA
until ``open_gate()`` (or its own bounded timeout), and only then takes the message and answers
250: the client sits inside DATA meanwhile, exactly the "sent, not yet recorded" window.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.peers import PushPeer, SmtpPeer


class TimedSmtpPeer(SmtpPeer):
    def __init__(self, *, gate_after: int | None = None, gate_timeout: float = 60.0) -> None:
        super().__init__()
        self.received_at: list[float] = []  # parallel to ``messages``: time.time() of arrival
        self.gate_after = gate_after
        self.gate_timeout = gate_timeout
        self.held = 0  # DATA commands waiting at the gate right now
        self._gate_open = threading.Event()
        self._gate_lock = threading.Lock()

    def open_gate(self) -> None:
        self._gate_open.set()

    def message_ids(self) -> list[str]:
        return [str(m.message["Message-ID"]) for m in self.messages]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.gate_after is not None and not self._gate_open.is_set():
            with self._gate_lock:
                gated = len(self.messages) + self.held >= self.gate_after
                if gated:
                    self.held += 1
            if gated:
                try:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(None, self._gate_open.wait, self.gate_timeout)
                finally:
                    with self._gate_lock:
                        self.held -= 1
        # Stamped before the parent takes the message (and before any reply), so a busy machine
        # delaying this thread can never make a message look later than it was. No await
        # between the parent's append and ours: the lists stay parallel.
        arrived = time.time()
        result = await super().handle_DATA(server, session, envelope)
        self.received_at.append(arrived)
        return result


class TimedPushPeer(PushPeer):
    def __init__(self) -> None:
        super().__init__()
        self.received_at: list[float] = []  # parallel to ``pushes``

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # The parent appends to ``pushes`` and returns without awaiting in between (no scripted
        # resets here), so the stamp lands at the same index.
        arrived = time.time()  # before the reply: see TimedSmtpPeer
        response = await super()._handle(request)
        self.received_at.append(arrived)
        return response

    def accepted(self) -> list[tuple[Any, float]]:
        """(push, arrival time) for the pushes answered 201, payload decrypted."""
        return [
            (push, at)
            for push, at in zip(self.pushes, self.received_at, strict=False)
            if push.status == 201 and push.payload is not None
        ]
