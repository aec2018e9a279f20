"""``python -m bench.raw_smtp PORT CONNECTIONS``: the email baseline — bare aiosmtplib sending
the messages the worker sends, to the same sink, over the same number of connections.

On ``send N GEN`` (stdin) it builds N messages as the worker would for the bench's queued
notifications (``build_email``: the same title, text, HTML and headers, one recipient each),
before the clock; then emits ``{"event": "started", "gen", "t"}`` and sends them with
CONNECTIONS connections opened after the clock started (the worker opens its pool during its
run too), each sending one message after the other with ``SMTP.sendmail``; then
``{"event": "sent", "gen", "t", "sent", "cpu"}`` (CPU seconds of the sending). The bench
reads the end from the sink, as for the worker. ``quit`` ends it. No database, no claim, no
record: what is left is the SMTP exchange and aiosmtplib's own cost.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from email import policy

import aiosmtplib

from bench.stdin_commands import stdin_commands
from notifier.channels.base import OutgoingMessage
from notifier.channels.email import build_email
from notifier.models.base import utcnow

SENDER = "bench@notifier.test"
SMTP_FROM = f"Bench <{SENDER}>"
RECIPIENT = "someone@bench.test"


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def notifications(n: int) -> list[OutgoingMessage]:
    """``bench/data.py``'s queued notifications, as a channel receives them."""
    return [
        OutgoingMessage(
            notification_id=uuid.uuid4(),
            user_id=f"user-{g % 100}",
            title=f"Bench {g}",
            message=f"Benchmark notification number {g}",
            notification_type="info",
            priority="normal",
            created_at=utcnow(),
        )
        for g in range(1, n + 1)
    ]


def messages(n: int) -> list[bytes]:
    """What the worker sends for ``bench/data.py``'s queued notifications, as bytes."""
    return [
        build_email(outgoing, to=RECIPIENT, smtp_from=SMTP_FROM).as_bytes(policy=policy.SMTP)
        for outgoing in notifications(n)
    ]


async def send_all(port: int, connections: int, payloads: list[bytes]) -> int:
    queue = iter(payloads)
    sent = 0

    async def one_connection() -> None:
        nonlocal sent
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        try:
            for payload in queue:  # shared: each connection takes the next message
                await smtp.sendmail(SENDER, [RECIPIENT], payload)
                sent += 1
        finally:
            await smtp.quit()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return sent


async def _main(port: int, connections: int) -> None:
    emit({"event": "ready"})
    async for command, arg in stdin_commands():
        if command != "send":
            continue
        count, _, generation = arg.partition(" ")
        payloads = messages(int(count))
        # CPU seconds beside the wall clock: on a shared machine they carry, the rate does not.
        cpu = time.process_time()
        emit({"event": "started", "gen": int(generation or 0), "t": time.time()})
        sent = await send_all(port, connections, payloads)
        cpu = time.process_time() - cpu
        emit(
            {
                "event": "sent",
                "gen": int(generation or 0),
                "t": time.time(),
                "sent": sent,
                "cpu": cpu,
            }
        )


def main() -> int:
    asyncio.run(_main(int(sys.argv[1]), int(sys.argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
