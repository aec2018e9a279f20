"""``python -m bench.record_window``: the email duplicate window, measured.

An email the SMTP server accepted (250) is sent again if its worker dies before the commit that
records it: the row comes back when the lease runs out. This measures that window, under load,
from outside the worker: the time from the server's 250 to the commit of the row that records
the email ``delivered``.

- PostgreSQL: a private, throw-away cluster (``tests/faults/processes.PrivateCluster``) with
  ``track_commit_timestamp = on``, so the commit time of each record is the server's own
  (``pg_xact_commit_timestamp(xmin)`` of the channel's row, whose last write is that record);
- one ``notifier worker`` process with the default concurrency, batch size and lease;
- an SMTP server in this process (aiosmtpd) that stamps ``time.time()`` when it answers a
  message's DATA with 250, and answers RCPT with 550 for ``nouser@`` addresses;
- load: notifications queued every 50 ms at ``--rate`` per second for ``--seconds``; a share
  of them (``--fail-share``) to a refused address (their failures are recorded among the
  successes), and a share (``--two-channel-share``) on email and websocket (their lease
  release is a record of its own); then until every row is settled.

Prints one JSON line: how many emails, and the window's p50, p99 and max in milliseconds.

    .venv/bin/python -m bench.record_window --rate 300 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.data import queue_notifications, unsettled
from bench.databases import connect, migrate_database
from bench.figures import percentile
from tests.faults.processes import PrivateCluster, ProcessSet, poll_until
from tests.faults.scenario import service_env

TICK = 0.05
FROM_DOMAIN = "window.bench"


class StampingSink:
    """Takes every message; remembers when it answered each one's DATA (by Message-ID)."""

    def __init__(self) -> None:
        self.accepted_at: dict[str, float] = {}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nouser@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        for line in content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().decode()
                self.accepted_at[message_id] = time.time()  # the 250 goes out right after
                break
        return "250 2.0.0 OK"


async def _load(url: str, *, rate: float, seconds: float, fail: float, two: float) -> int:
    """Queue the notifications tick by tick; returns how many emails should be delivered."""
    connection = await connect(url)
    owed = {"ok": 0.0, "fail": 0.0, "two": 0.0}
    delivered = 0
    try:
        started = time.monotonic()
        ticks = math.ceil(seconds / TICK)
        for tick in range(ticks):
            for kind, share in (("ok", 1 - fail - two), ("fail", fail), ("two", two)):
                owed[kind] += rate * TICK * share
                n, owed[kind] = int(owed[kind]), owed[kind] - int(owed[kind])
                if n == 0:
                    continue
                address = "nouser@example.com" if kind == "fail" else "someone@example.com"
                channels = ("email", "websocket") if kind == "two" else ("email",)
                await queue_notifications(
                    connection, n, channels=channels, recipient={"email": address}
                )
                delivered += n if kind != "fail" else 0
            await asyncio.sleep(max(0.0, started + (tick + 1) * TICK - time.monotonic()))
    finally:
        await connection.close()
    return delivered


async def measure(rate: float, seconds: float, fail: float, two: float) -> dict[str, object]:
    sink = StampingSink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="sink.bench"), "127.0.0.1", 0)
    smtp_port = server.sockets[0].getsockname()[1]
    # fsync as in production (the fault suite turns it off): a commit waits for its WAL flush.
    cluster = await PrivateCluster.create(
        settings=["track_commit_timestamp=on", "fsync=on", "full_page_writes=on"]
    )
    try:
        url = await cluster.create_database("window")
        await migrate_database(url)
        env = service_env(
            url,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_from=f"notify@{FROM_DOMAIN}",
            smtp_starttls=False,
            # The service's defaults, not the fault suite's short ones.
            lease_seconds=30,
            worker_concurrency=32,
            worker_batch_size=50,
            poll_interval_seconds=1,
        )
        with tempfile.TemporaryDirectory(prefix="record-window-") as logs:
            async with ProcessSet(Path(logs)) as procs:
                await procs.worker(env)
                expected = await _load(url, rate=rate, seconds=seconds, fail=fail, two=two)
                connection = await connect(url)
                try:

                    async def settled() -> tuple[bool, int]:
                        left = await unsettled(connection)
                        return left == 0, left

                    await poll_until(settled, timeout=120, interval=0.25, what="all settled")
                    rows = await connection.fetch(
                        "SELECT notification_id, "
                        "extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS committed "
                        "FROM notification_deliveries "
                        "WHERE channel = 'email' AND status = 'delivered'"
                    )
                finally:
                    await connection.close()
    finally:
        server.close()
        await cluster.destroy()
    windows = sorted(
        (row["committed"] - sink.accepted_at[f"<{row['notification_id']}@{FROM_DOMAIN}>"]) * 1000
        for row in rows
    )
    assert len(windows) == expected == len(sink.accepted_at), (len(windows), expected)
    return {
        "figure": "email_record_window_ms",
        "rate_per_s": rate,
        "seconds": seconds,
        "fail_share": fail,
        "two_channel_share": two,
        "emails": len(windows),
        "p50": round(percentile(windows, 50), 1),
        "p99": round(percentile(windows, 99), 1),
        "max": round(windows[-1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.record_window", description=__doc__)
    parser.add_argument("--rate", type=float, default=300.0, help="notifications per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fail-share", type=float, default=0.2)
    parser.add_argument("--two-channel-share", type=float, default=0.2)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.rate, args.seconds, args.fail_share, args.two_channel_share))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
