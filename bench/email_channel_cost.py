"""``python -m bench.email_channel_cost [N] [CONNECTIONS]``: CPU per email of the email channel
against bare aiosmtplib, in one process, without the database (issue 15).

Scenario 7 measures the whole worker (claim, send, record); this isolates the channel's part,
so that a change to the channel shows apart from the worker's queue. A sink process
(``bench/smtp_sink.py``) takes the messages; this process measures its own CPU only. Three
sides, alternating, each sending N emails over CONNECTIONS connections (opened inside the
clock, as in scenario 7):

- ``raw``: aiosmtplib ``sendmail`` of pre-built bytes, one loop per connection
  (``bench/raw_smtp.py``'s baseline);
- ``relays``: the same pre-built bytes through ``RelayChain.send`` (the relay chain, its
  breakers and metrics, the pooled connections and the SMTP transaction), from 2 x CONNECTIONS
  concurrent senders as the worker's many in-flight sends;
- ``channel``: ``EmailChannel.send`` of the notifications themselves (the message built per
  send, unsubscribe link included, then the relays), from as many senders.

Prints the CPU milliseconds per email and the rate of each pass, then medians; ratios are to
``raw`` from the same passes.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import aiosmtplib
from pydantic import SecretStr

from bench.processes import PYTHON, free_port
from bench.raw_smtp import RECIPIENT, SENDER, SMTP_FROM, messages, notifications
from notifier.channels.base import Destination, OutgoingMessage
from notifier.channels.email import EmailChannel
from notifier.channels.smtp_relays import RelayChain, relay_metrics, relays_from
from notifier.settings import Settings

PASSES = 3


async def raw(port: int, connections: int, payloads: list[bytes]) -> None:
    queue = iter(payloads)

    async def one_connection() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        try:
            for payload in queue:
                await smtp.sendmail(SENDER, [RECIPIENT], payload)
        finally:
            await smtp.quit()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


async def senders(
    count: int, items: list[object], send: Callable[[object], Awaitable[object]]
) -> None:
    queue = iter(items)

    async def one() -> None:
        for item in queue:
            await send(item)

    await asyncio.gather(*(one() for _ in range(count)))


def settings(port: int, connections: int) -> Settings:
    return Settings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from=SMTP_FROM,
        smtp_starttls=False,
        smtp_max_connections=connections,
        token_secret=SecretStr("bench-secret-" + "x" * 32),
        public_url="https://notifier.test",
    )


async def relays(port: int, connections: int, payloads: list[bytes]) -> None:
    config = settings(port, connections)
    chain = RelayChain(
        relays_from(config),
        timeout=config.smtp_timeout_seconds,
        pause_seconds=config.breaker_seconds,
        max_connections=connections,
        metrics=relay_metrics(None),
    )
    try:
        await senders(
            2 * connections,
            list(payloads),
            lambda payload: chain.send(payload, SENDER, RECIPIENT, False),  # type: ignore[arg-type]
        )
    finally:
        await chain.aclose()


async def channel(port: int, connections: int, outgoing: list[OutgoingMessage]) -> None:
    email = EmailChannel(settings(port, connections))
    destination = Destination(user_id="user-1", email=RECIPIENT)
    try:
        await senders(
            2 * connections,
            list(outgoing),
            lambda message: email.send(message, destination),  # type: ignore[arg-type]
        )
    finally:
        await email.aclose()


async def main(n: int, connections: int) -> None:
    port = free_port()
    sink = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "bench.smtp_sink", str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert sink.stdout is not None and sink.stdin is not None
    await sink.stdout.readline()  # ready
    payloads = messages(n)
    outgoing = notifications(n)
    sides: dict[str, Callable[[], Awaitable[None]]] = {
        "raw": lambda: raw(port, connections, payloads),
        "relays": lambda: relays(port, connections, payloads),
        "channel": lambda: channel(port, connections, outgoing),
    }
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    rate: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for index in range(PASSES):
            for side, run in sides.items():
                started, wall = time.process_time(), time.perf_counter()
                await run()
                cpu[side].append(1000 * (time.process_time() - started) / n)
                rate[side].append(n / (time.perf_counter() - wall))
                print(
                    f"pass {index + 1} {side:8} {cpu[side][-1]:.3f} ms CPU/email "
                    f"{rate[side][-1]:7.0f} emails/s",
                    flush=True,
                )
    finally:
        sink.stdin.write(b"quit\n")
        await sink.stdin.drain()
        await sink.wait()
    base = statistics.median(cpu["raw"])
    for side in sides:
        median = statistics.median(cpu[side])
        print(
            f"median {side:8} {median:.3f} ms CPU/email ({median / base:.2f}x raw), "
            f"{statistics.median(rate[side]):.0f} emails/s"
        )


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 16,
        )
    )
