"""Fault case 6: many processes on one database. Two API processes, four worker processes, 2000
notifications on websocket + email + browser for 50 users whose sockets are spread over both
API processes.

Every channel is attempted exactly once at the peers (emails counted by Message-ID, pushes by
the notification id in the decrypted payload), every websocket notification reaches its user's
socket whichever API process holds it, and all 2000 end ``delivered`` with the websocket channel
acked (``delivered``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from notifier.vapid import generate_private_key
from tests.faults.clients import UserSocket
from tests.faults.peers import TimedPushPeer, TimedSmtpPeer
from tests.faults.processes import ProcessSet, ServiceProcess, poll_until
from tests.faults.scenario import (
    VAPID_SUBJECT,
    Producer,
    channel_counts,
    db_connect,
    deliveries,
    service_env,
    status_counts,
)
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.service import migrate

pytestmark = pytest.mark.postgres

USERS = 50
TOTAL = 2000
APIS = 2
WORKERS = 4
CHANNELS = ["websocket", "email", "browser"]
ACKS_IN_FLIGHT = 6  # all clients together: keeps the API processes' pools small


@pytest.fixture
async def fresh_pg() -> AsyncIterator[str]:
    url = await create_pg_database("notifier_fault6")
    try:
        await migrate(url)
        yield url
    finally:
        await drop_pg_database(url)


@dataclass
class Deployment:
    apis: list[ServiceProcess]
    workers: list[ServiceProcess]
    producers: list[Producer]
    smtp: TimedSmtpPeer
    push: TimedPushPeer
    sockets: list[UserSocket] = field(default_factory=list)
    subscription_of: dict[str, str] = field(default_factory=dict)
    acks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ACKS_IN_FLIGHT))
    peak_connections: int = 0  # this test's sessions on the shared server, as sampled
    peak_server_connections: int = 0  # everybody's


async def _register_users(d: Deployment, users: list[str]) -> None:
    # One at a time: the shared server's connections are for every suite running now.
    for index, user in enumerate(users):
        producer = d.producers[index % APIS]
        await producer.put_recipient(user, email=f"{user}@example.com")
        subscription = d.push.subscribe()
        d.subscription_of[user] = subscription.id
        await producer.subscribe_push(user, subscription.as_json())
        token = await producer.token(user)
        # Half the users hold their socket on API #1, half on API #2.
        socket = UserSocket(
            user, f"{d.apis[index % APIS].ws_base}/v1/ws?token={token}", ack_limiter=d.acks
        )
        socket.start()
        d.sockets.append(socket)

    async def all_open() -> tuple[bool, int]:
        opened = sum(s.open.is_set() for s in d.sockets)
        return opened == len(users), opened

    await poll_until(all_open, timeout=20, what="every websocket client connected")


async def _wait_settled(d: Deployment, url: str, procs: ProcessSet) -> None:
    async def settled() -> tuple[bool, object]:
        try:
            connection = await db_connect(url)
        except AssertionError as exc:  # the shared server may be out of connections a moment
            return False, str(exc)
        try:
            statuses = await status_counts(connection)
            channels = await channel_counts(connection)
            ours = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
            everyone = await connection.fetchval("SELECT count(*) FROM pg_stat_activity")
            d.peak_connections = max(d.peak_connections, int(ours))
            d.peak_server_connections = max(d.peak_server_connections, int(everyone))
        finally:
            await connection.close()
        done = statuses == {"delivered": TOTAL} and channels == {
            "websocket:delivered": TOTAL,
            "email:delivered": TOTAL,
            "browser:sent": TOTAL,
        }
        return done, {
            "status": statuses,
            "channels": channels,
            "emails": len(d.smtp.messages),
            "pushes": len(d.push.pushes),
            "frames": sum(len(s.received) for s in d.sockets),
            "connections": [d.peak_connections, d.peak_server_connections],
        }

    try:
        # ~30 s on an idle 2-CPU machine; several times that when other suites load it.
        await poll_until(settled, timeout=240, interval=0.5, what="all 2000 delivered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{procs.logs()}") from None


def _assert_peers_once(d: Deployment, owner: dict[str, str]) -> None:
    emails = Counter(d.smtp.message_ids())
    assert set(emails) == {f"<{nid}@notifier.test>" for nid in owner}
    assert max(emails.values()) == 1, {m: n for m, n in emails.items() if n > 1}
    for mail in d.smtp.messages:
        nid = str(mail.message["X-Notifier-Notification-Id"])
        assert mail.rcpt_tos == [f"{owner[nid]}@example.com"]

    accepted = d.push.accepted()
    assert len(accepted) == len(d.push.pushes), "the push peer refused some pushes"
    pushes = Counter(p.json()["id"] for p, _ in accepted)
    assert set(pushes) == set(owner)
    assert max(pushes.values()) == 1, {i: n for i, n in pushes.items() if n > 1}
    for push, _ in accepted:
        assert push.sub_id == d.subscription_of[owner[push.json()["id"]]]


def _assert_sockets(d: Deployment, owner: dict[str, str]) -> None:
    by_user: dict[str, set[str]] = {}
    for nid, user in owner.items():
        by_user.setdefault(user, set()).add(nid)
    for socket in d.sockets:
        missing = by_user[socket.user_id] - set(socket.received)
        assert not missing, f"{socket.user_id} never got {sorted(missing)[:5]}"
        foreign = set(socket.received) - by_user[socket.user_id]
        assert not foreign, f"{socket.user_id} got another user's {sorted(foreign)[:5]}"


async def _assert_database(d: Deployment, url: str, owner: dict[str, str]) -> None:
    connection = await db_connect(url)
    try:
        rows = await deliveries(connection)
    finally:
        await connection.close()
    expected_status = {"websocket": "delivered", "email": "delivered", "browser": "sent"}
    for nid in owner:
        for channel in CHANNELS:
            row = rows[(nid, channel)]
            assert row["status"] == expected_status[channel], (nid, channel, row)
            assert row["attempts"] == 1, (nid, channel, row)
    for i, nid in enumerate(list(owner)[:: TOTAL // 40]):
        body = await d.producers[i % APIS].get(nid)
        assert body["status"] == "delivered" and body["retry_count"] == 0, body


async def test_two_apis_four_workers_2000_notifications(fresh_pg: str, tmp_path: Path) -> None:
    started = time.monotonic()
    async with (
        TimedSmtpPeer() as smtp,
        TimedPushPeer() as push,
        ProcessSet(tmp_path / "logs") as procs,
    ):
        env = service_env(
            fresh_pg,
            **smtp.settings(),
            vapid_private_key=generate_private_key(),
            vapid_subject=VAPID_SUBJECT,
            push_allow_private_endpoints=True,
            # The shared server's 100 connections serve every suite running at the moment: a
            # worker's pool stays at its floor (4, overflow 4) up to 16 sends in flight.
            worker_concurrency=16,
            worker_batch_size=16,
            lease_seconds=10,
        )
        apis = list(await asyncio.gather(*(procs.serve(env) for _ in range(APIS))))
        workers = list(await asyncio.gather(*(procs.worker(env) for _ in range(WORKERS))))
        d = Deployment(apis, workers, [Producer(api.base_url) for api in apis], smtp, push)
        try:
            users = [f"scale-{i:02d}" for i in range(USERS)]
            await _register_users(d, users)
            ready_at = time.monotonic()

            # 2000 through the batch endpoint, half through each API.
            items: list[dict[str, Any]] = [
                {
                    "user_id": users[i % USERS],
                    "title": f"Scale {i}",
                    "message": f"notification {i} of 2000",
                    "channels": CHANNELS,
                }
                for i in range(TOTAL)
            ]
            half = TOTAL // 2
            batches = await asyncio.gather(
                d.producers[0].enqueue_batch(items[:half]),
                d.producers[1].enqueue_batch(items[half:]),
            )
            owner = {n["id"]: n["user_id"] for batch in batches for n in batch}
            assert len(owner) == TOTAL
            enqueued_at = time.monotonic()

            await _wait_settled(d, fresh_pg, procs)
            drained_at = time.monotonic()

            print(
                "fault case 6 timings:",
                round(ready_at - started, 1),
                round(enqueued_at - ready_at, 1),
                round(drained_at - enqueued_at, 1),
                [d.peak_connections, d.peak_server_connections],
            )
            _assert_peers_once(d, owner)
            _assert_sockets(d, owner)
            await _assert_database(d, fresh_pg, owner)
            for process in (*apis, *workers):
                assert process.running and process.starts == 1, process.tail()
            report = {
                "notifications": TOTAL,
                "emails": len(smtp.messages),
                "pushes": len(push.pushes),
                "websocket_frames": sum(s.frames for s in d.sockets),
                "websocket_reconnects": sum(s.connects - 1 for s in d.sockets),
                "setup_seconds": round(ready_at - started, 2),
                "enqueue_seconds": round(enqueued_at - ready_at, 2),
                "drain_seconds": round(drained_at - enqueued_at, 2),
                "peak_connections_ours_all": [d.peak_connections, d.peak_server_connections],
            }
            print("fault case 6:", json.dumps(report))
        finally:
            for socket in d.sockets:
                await socket.stop()
            for producer in d.producers:
                await producer.aclose()
