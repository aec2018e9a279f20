"""The SMTP peer with what dispatch tests also need to see: how many RCPTs arrived, when each
message arrived, which ones were answered 250, and a switch that stalls (or slows) DATA."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from email import message_from_bytes, policy
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.peers import SmtpPeer


def message_id_of(raw: bytes) -> str:
    return str(message_from_bytes(raw, policy=policy.default)["Message-ID"])


class DispatchSmtpPeer(SmtpPeer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rcpts: list[str] = []
        self.arrivals: list[tuple[str, float]] = []  # (Message-ID, time.time()) per DATA
        self.accepted: list[str] = []  # Message-IDs answered 250, in order
        self.data_delay = 0.0  # seconds each DATA takes before its answer
        self.accept_budget: int | None = None  # after this many 250s, DATA stalls (None: never)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._lock:
            self.rcpts.append(address)
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message_id = message_id_of(bytes(envelope.original_content or b""))
        with self._lock:
            self.arrivals.append((message_id, time.time()))
            stall = self.accept_budget is not None and self.accept_budget <= 0
            if self.accept_budget is not None and not stall:
                self.accept_budget -= 1
        if stall:
            self.script("DATA", "stall")  # recorded, never answered
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self._lock:
                self.accepted.append(message_id)
            self._notify()
        return reply

    def received_ids(self) -> Counter[str]:
        return Counter(str(m.message["Message-ID"]) for m in self.messages)

    async def wait_for_accepted(self, n: int, within: float = 10.0) -> list[str]:
        await self.wait_until(lambda: len(self.accepted) >= n, within)
        return list(self.accepted)
