"""The soak's verdict: every message each peer received, judged against when the database first
showed its channel as a success (``SuccessMonitor``, twice a second)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from typing import Any

import asyncpg

from tests.soak.report import CHANNELS, PROVIDER_CHANNELS, SUCCESS, SoakReport
from tests.soak.stack import Stack


class SuccessMonitor:
    """Reads which channels the database has recorded as a success, twice a second, and keeps
    for each the end time of the first read that saw it: the commit is surely before that."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.seen_at: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="success-monitor")

    async def stop(self) -> None:
        """Stops between two reads (cancelling asyncpg mid-query can leave it confused)."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    async def read_once(self, connection: asyncpg.Connection) -> None:
        rows = await connection.fetch(
            "SELECT notification_id, channel, status FROM notification_deliveries "
            "WHERE status IN ('sent', 'delivered')"
        )
        ended = time.time()
        for row in rows:
            if row["status"] in SUCCESS[row["channel"]]:
                self.seen_at.setdefault((str(row["notification_id"]), row["channel"]), ended)

    async def _run(self) -> None:
        connection: asyncpg.Connection | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if connection is None:
                        connection = await asyncpg.connect(self.dsn, timeout=3)
                    await self.read_once(connection)
                except Exception:  # the database is restarting: read again once it is back
                    if connection is not None:
                        connection.terminate()
                    connection = None
                # A sampling period, and the way to notice the stop.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.5)
        finally:
            if connection is not None:
                await connection.close(timeout=5)


def _peer_receipts(stack: Stack, title_to_id: dict[str, str]) -> dict[tuple[str, str], list[float]]:
    receipts: dict[tuple[str, str], list[float]] = defaultdict(list)
    for mail, at in zip(stack.smtp.messages, stack.smtp.received_at, strict=False):
        nid = str(mail.message["Message-ID"]).strip("<>").split("@")[0]
        receipts[(nid, "email")].append(at)
    for push, at in stack.push.accepted():
        receipts[(str(push.json()["id"]), "browser")].append(at)
    for sms in stack.twilio.messages:
        title = sms.body.split(":")[0]
        receipts[(title_to_id.get(title, f"unknown:{title}"), "sms")].append(
            sms.date_created.timestamp()
        )
    for socket in stack.sockets.values():
        for nid, at in socket.arrivals:
            receipts[(nid, "websocket")].append(at)
    return receipts


def _judge_channel(
    report: SoakReport,
    monitor: SuccessMonitor,
    nid: str,
    channel: str,
    entry: dict[str, Any],
    receipts: dict[tuple[str, str], list[float]],
    window: Counter[str],
) -> None:
    got = sorted(receipts.get((nid, channel), []))
    if not got or entry.get(channel) not in SUCCESS[channel]:
        if not report.drained and entry.get(channel) in ("pending", "retrying"):
            report.undelivered += 1  # still queued when the drain window closed
            return
        report.lost += 1
        report.lost_detail.append(
            f"{nid} {channel}: {len(got)} at the peer, {entry.get(channel)} in the database"
        )
        return
    if channel == "websocket":
        report.websocket_repeated_frames += len(got) - 1
        return
    seen = monitor.seen_at.get((nid, channel))
    for at in got[1:]:
        if seen is not None and at > seen:
            report.resent_after_success += 1
            report.resent_after_success_detail.append(
                f"{nid} {channel}: received at {[report.rel(t) for t in got]}, "
                f"a success in the database by {report.rel(seen)}, "
                f"{entry.get(f'{channel}_attempts')} attempts recorded"
            )
        else:
            window[channel] += 1


async def judge(
    stack: Stack, report: SoakReport, accepted: dict[str, int], monitor: SuccessMonitor
) -> None:
    connection = await asyncpg.connect(stack.dsn, timeout=10)
    try:
        await monitor.read_once(connection)
        rows = await connection.fetch(
            "SELECT n.id, n.user_id, n.title, d.channel, d.status, d.attempts "
            "FROM notifications n "
            "JOIN notification_deliveries d ON d.notification_id = n.id"
        )
    finally:
        await connection.close()
    in_db: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = in_db.setdefault(str(row["id"]), {"user": row["user_id"], "title": row["title"]})
        entry[row["channel"]] = row["status"]
        entry[f"{row['channel']}_attempts"] = row["attempts"]
    report.notifications_in_database = len(in_db)
    title_to_id = {e["title"]: nid for nid, e in in_db.items()}
    receipts = _peer_receipts(stack, title_to_id)
    report.peer_messages = {
        "email": len(stack.smtp.messages),
        "browser": len(stack.push.accepted()),
        "sms": len(stack.twilio.messages),
        "websocket_frames": sum(s.frames for s in stack.sockets.values()),
    }
    for nid in accepted:
        if nid not in in_db:
            report.lost += 1
            report.lost_detail.append(f"{nid}: accepted (202) but not in the database")
    window: Counter[str] = Counter()
    for nid, entry in in_db.items():
        for channel in CHANNELS:
            _judge_channel(report, monitor, nid, channel, entry, receipts, window)
    for key in receipts:
        if key[0] not in in_db:
            report.lost_detail.append(f"peer got a message for an unknown notification {key}")
            report.lost += 1
    report.duplicates_in_window = {c: window.get(c, 0) for c in PROVIDER_CHANNELS}
