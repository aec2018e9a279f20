"""``python -m bench.smtp_sink PORT``: an SMTP server on 127.0.0.1 that accepts every message
at once (aiosmtpd, no TLS, no AUTH) and counts them.

stdout: ``{"event": "ready"}`` once listening, ``{"event": "done", "t": ..., "received": n}``
after ``expect N GEN`` on stdin once N messages arrived since, ``{"event": "count", ...}`` after
``count``; ``quit`` ends it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.stdin_commands import stdin_commands


class Sink:
    def __init__(self) -> None:
        self.received = 0
        self.expect: int | None = None
        self.generation = 0
        self.first: float | None = None  # when the first of the expected arrived

    def emit(self, event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def arrived(self) -> None:
        """One more message (or request, for ``bench/webhook_sink.py``)."""
        self.received += 1
        if self.first is None:
            self.first = time.time()
        if self.expect is not None and self.received >= self.expect:
            self.expect = None
            self.emit(
                {
                    "event": "done",
                    "gen": self.generation,
                    "t": time.time(),
                    "first": self.first,
                    "received": self.received,
                }
            )

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrived()
        return "250 2.0.0 OK"

    async def serve_commands(self) -> None:
        """Read ``expect N GEN``, ``count`` and ``quit`` from stdin until ``quit`` or EOF."""
        async for command, arg in stdin_commands():
            if command == "expect":
                count, _, generation = arg.partition(" ")
                self.received, self.first = 0, None
                self.expect = int(count)
                self.generation = int(generation or 0)
            elif command == "count":
                self.emit({"event": "count", "received": self.received})


async def _main(port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.bench", ident="bench-sink"), "127.0.0.1", port
    )
    sink.emit({"event": "ready"})
    try:
        await sink.serve_commands()
    finally:
        server.close()


def main() -> int:
    asyncio.run(_main(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
