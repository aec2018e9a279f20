"""The shared peers (tests/peers), plus what the fault suite and the soak need on top: the time
each message arrived (to tell a resend inside the documented window from one after a recorded
success) and an SMTP gate that holds messages mid-send, so a fault can strike while sends are
in flight.

A gated SMTP peer lets the first ``gate_after`` messages through, then holds every further DATA
until ``open_gate()`` (or its own bounded timeout), and only then takes the message and answers
250: the client sits inside DATA meanwhile, exactly the "sent, not yet recorded" window.

Per-address RCPT scripts (``script_rcpt("flaky@x", "451 ...", "451 ...")``, or ``"stall"``: never
answer, until the client gives up) and DATA scripts (``script_data("drop@x", "drop")``: take the
message, then drop the connection before the reply) make one recipient misbehave while the
others flow; every RCPT is logged with its arrival time (``rcpt_log``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.peers import PushPeer, SmtpPeer


class TimedSmtpPeer(SmtpPeer):
    def __init__(self, *, gate_after: int | None = None, gate_timeout: float = 60.0) -> None:
        super().__init__()
        self.gate_after = gate_after
        self.gate_timeout = gate_timeout
        self.held = 0  # DATA commands waiting at the gate right now
        self._gate_open = threading.Event()
        self._gate_lock = threading.Lock()
        self.rcpt_log: list[tuple[str, float]] = []  # (address, time.time()) per RCPT
        self.stalled = 0  # RCPTs left unanswered right now (scripted "stall")
        self._rcpt_scripts: dict[str, deque[str]] = {}
        self._data_scripts: dict[str, deque[str]] = {}

    def open_gate(self) -> None:
        self._gate_open.set()

    def script_rcpt(self, address: str, *responses: str) -> None:
        """Answer the next RCPTs for ``address`` with these, in order; then as usual."""
        with self._gate_lock:
            self._rcpt_scripts.setdefault(address.lower(), deque()).extend(responses)

    def script_data(self, address: str, *responses: str) -> None:
        """Answer the next DATAs of messages to ``address`` with these (see SmtpPeer.script)."""
        with self._gate_lock:
            self._data_scripts.setdefault(address.lower(), deque()).extend(responses)

    def rcpts_for(self, address: str) -> list[float]:
        """When each RCPT for ``address`` arrived."""
        return [at for rcpt, at in self.rcpt_log if rcpt.lower() == address.lower()]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._gate_lock:
            self.rcpt_log.append((address, time.time()))
            queue = self._rcpt_scripts.get(address.lower())
            scripted = queue.popleft() if queue else None
            if scripted == "stall":
                self.stalled += 1
        self._notify()
        if scripted == "stall":
            try:
                await asyncio.Event().wait()  # cancelled when the client hangs up
            finally:
                with self._gate_lock:
                    self.stalled -= 1
                self._notify()
        if scripted is not None:
            return scripted
        return await super().handle_RCPT(server, session, envelope, address, options)

    def message_ids(self) -> list[str]:
        return [str(m.message["Message-ID"]) for m in self.messages]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.gate_after is not None and not self._gate_open.is_set():
            with self._gate_lock:
                gated = len(self.messages) + self.held >= self.gate_after
                if gated:
                    self.held += 1
            if gated:
                self._notify()
                try:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(None, self._gate_open.wait, self.gate_timeout)
                finally:
                    with self._gate_lock:
                        self.held -= 1
        with self._gate_lock:
            queue = self._data_scripts.get(str(envelope.rcpt_tos[0]).lower())
            scripted = queue.popleft() if queue else None
        if scripted is not None:
            # Handed to the parent's DATA script, which takes it before its first await: no
            # other connection's DATA comes in between (all run on the controller's loop).
            self.script("DATA", scripted)
        return await super().handle_DATA(server, session, envelope)

    @property
    def received_at(self) -> list[float]:
        """Parallel to ``messages``: time.time() of each, stamped before any reply."""
        return [message.at for message in self.messages]


class TimedPushPeer(PushPeer):
    @property
    def received_at(self) -> list[float]:
        """Parallel to ``pushes``: time.time() of each arrival."""
        return [push.at for push in self.pushes]

    def accepted(self) -> list[tuple[Any, float]]:
        """(push, arrival time) for the pushes answered 201, payload decrypted."""
        return [
            (push, push.at)
            for push in self.pushes
            if push.status == 201 and push.payload is not None
        ]
