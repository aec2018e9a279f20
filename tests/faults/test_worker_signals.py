"""Fault case 4: a `notifier worker` process SIGKILLed (or SIGTERMed) between the channels of
one notification (email + browser push), and another worker process that picks the row up once
the lease runs out.

- Killed while the push is in flight (the push service holds the request open) after the email
  was accepted and recorded: the second worker pushes once, and the email is never resent.
- The mirror, killed while the email is in flight (the SMTP peer holds DATA) after the push was
  accepted and recorded: the push is never resent, and the email is resent at most once, with
  the same Message-ID.
- SIGTERM while a batch is in flight: drained, exit 0 in bounded time, the rest delivered by a
  second worker, nothing sent twice.

Outcomes are judged at the peers (Message-IDs, decrypted push payloads, pushes the peer actually
answered) and in the database rows; the workers are driven only through their environment,
their signals and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from notifier.vapid import generate_private_key
from tests.faults.peers import TimedPushPeer, TimedSmtpPeer
from tests.faults.processes import ProcessSet, ServiceProcess
from tests.faults.scenario import VAPID_SUBJECT, Producer, RowReader, local_api, service_env
from tests.peers import CLIENT_GONE, BrowserSubscription, PushReply

pytestmark = pytest.mark.postgres

LEASE = 2.0  # short, so the second worker takes over within seconds of the kill
STOP_WITHIN = 15.0  # seconds from SIGTERM to exit: the drain (up to the lease) and a margin
CHANNELS = ["email", "browser"]


async def _email_and_push(
    producer: Producer, push: TimedPushPeer
) -> tuple[str, str, BrowserSubscription]:
    """A user with an address and one subscription, and one notification on both channels."""
    user = f"kill-{uuid.uuid4().hex[:8]}"
    subscription = push.subscribe()
    await producer.put_recipient(user, email=f"{user}@example.com")
    await producer.subscribe_push(user, subscription.as_json())
    created = await producer.enqueue(
        {
            "user_id": user,
            "title": "Two channels",
            "message": "one email and one push, each exactly once",
            "channels": CHANNELS,
        }
    )
    return str(created["id"]), user, subscription


def _channel_is(channel: str, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda state: bool(state["channels"][channel]["status"] == status)


def _settled(state: dict[str, Any]) -> bool:
    return bool(state["status"] == "delivered" and state["lease_owner"] is None)


def _sigkill(worker: ServiceProcess) -> None:
    worker.kill()
    assert worker.process is not None and worker.process.returncode == -signal.SIGKILL


@dataclass
class Deployment:
    smtp: TimedSmtpPeer
    push: TimedPushPeer
    procs: ProcessSet
    producer: Producer
    rows: RowReader
    env: dict[str, str]  # a worker process's environment


@contextlib.asynccontextmanager
async def _deployment(
    database_url: str, log_dir: Path, smtp: TimedSmtpPeer, **settings: Any
) -> AsyncIterator[Deployment]:
    """The peers, an API in this process, and the environment of worker processes (started by
    the test) with email and push configured and a short lease."""
    push_settings = {
        "vapid_private_key": generate_private_key(),
        "vapid_subject": VAPID_SUBJECT,
        "push_allow_private_endpoints": True,
    }
    async with (
        smtp,
        TimedPushPeer() as push,
        ProcessSet(log_dir) as procs,
        local_api(database_url, **push_settings) as producer,
        RowReader(database_url) as rows,
    ):
        env = service_env(
            database_url, **smtp.settings(), **push_settings, **{"lease_seconds": LEASE, **settings}
        )
        yield Deployment(smtp, push, procs, producer, rows, env)


async def test_sigkill_after_email_before_push(fault_db: str, tmp_path: Path) -> None:
    held = asyncio.Event()  # never set: the first push stays unanswered until its client dies
    async with _deployment(fault_db, tmp_path / "logs", TimedSmtpPeer()) as d:
        smtp, push, procs, producer, rows = d.smtp, d.push, d.procs, d.producer, d.rows
        first = await procs.worker(d.env, name="first")
        nid, user, subscription = await _email_and_push(producer, push)
        push.reply(subscription.id, PushReply(hold=held))  # the first push only

        await push.wait_for_holding(1, timeout=30)
        before = await rows.wait(
            nid, _channel_is("email", "delivered"), what="email recorded", logs=procs.logs
        )
        assert before["channels"]["browser"]["status"] == "pending", before
        assert before["lease_owner"] is not None, before
        _sigkill(first)
        # The peer sees the client hang up: that push was never answered, so never accepted.
        await push.wait_until(lambda: push.holding == 0, timeout=10)

        second = await procs.worker(d.env, name="second")
        after = await rows.wait(nid, _settled, what="delivered", logs=procs.logs)
        assert second.running, second.tail()

    # At the peers: one email, one accepted push, both for this notification.
    assert Counter(smtp.message_ids()) == {f"<{nid}@notifier.test>": 1}
    assert smtp.messages[0].rcpt_tos == [f"{user}@example.com"]
    assert [p.status for p in push.pushes] == [CLIENT_GONE, 201]
    accepted = push.accepted()
    assert [p.json()["id"] for p, _ in accepted] == [nid]
    assert accepted[0][0].sub_id == subscription.id
    # In the database: each channel once, the killed push attempt never recorded.
    email, browser = after["channels"]["email"], after["channels"]["browser"]
    assert (email["status"], email["attempts"]) == ("delivered", 1), after
    assert (browser["status"], browser["attempts"]) == ("sent", 1), after
    assert after["retry_count"] == 0, after


async def test_sigkill_while_email_in_flight_after_push(fault_db: str, tmp_path: Path) -> None:
    # Every DATA waits at the gate (bounded by its own timeout) until the test opens it; the
    # client waits inside DATA for as long.
    gated = TimedSmtpPeer(gate_after=0, gate_timeout=30)
    async with _deployment(fault_db, tmp_path / "logs", gated, smtp_timeout_seconds=30) as d:
        smtp, push, procs, producer, rows = d.smtp, d.push, d.procs, d.producer, d.rows
        first = await procs.worker(d.env, name="first")
        nid, user, _ = await _email_and_push(producer, push)

        await smtp.wait_until(lambda: smtp.held == 1, within=30)
        before = await rows.wait(
            nid, _channel_is("browser", "sent"), what="push recorded", logs=procs.logs
        )
        assert before["channels"]["email"]["status"] == "pending", before
        _sigkill(first)
        # The message was whole at the server when the client died; a real server queues it.
        smtp.open_gate()

        second = await procs.worker(d.env, name="second")
        after = await rows.wait(nid, _settled, what="delivered", logs=procs.logs)
        assert second.running, second.tail()

    # The email: resent at most once, always with the same Message-ID, to the same address.
    copies = Counter(smtp.message_ids())
    assert set(copies) == {f"<{nid}@notifier.test>"}, copies
    assert 1 <= copies[f"<{nid}@notifier.test>"] <= 2, copies
    assert {tuple(m.rcpt_tos) for m in smtp.messages} == {(f"{user}@example.com",)}
    # The push, recorded before the kill: never sent again.
    assert [(p.status, p.json()["id"]) for p in push.pushes] == [(201, nid)]
    browser, email = after["channels"]["browser"], after["channels"]["email"]
    assert (browser["status"], browser["attempts"]) == ("sent", 1), after
    assert email["status"] == "delivered", after


async def test_sigterm_mid_batch_drains_and_exits_zero(fault_db: str, tmp_path: Path) -> None:
    """SIGTERM while a batch is in flight (its pushes held open by the push service): the worker
    claims nothing more, finishes and records what it had started, and exits 0 within bounded
    time; a second worker delivers the rest. Nothing is lost, nothing is sent twice."""
    total, concurrency = 12, 4
    released = asyncio.Event()
    async with _deployment(
        fault_db,
        tmp_path / "logs",
        TimedSmtpPeer(),
        lease_seconds=5,  # the drain may last up to the lease
        worker_concurrency=concurrency,
        worker_batch_size=concurrency,
    ) as d:
        smtp, push, procs, producer, rows = d.smtp, d.push, d.procs, d.producer, d.rows
        first = await procs.worker(d.env, name="first")
        user = f"term-{uuid.uuid4().hex[:8]}"
        subscription = push.subscribe()
        push.reply(subscription.id, PushReply(hold=released), always=True)
        await producer.put_recipient(user, email=f"{user}@example.com")
        await producer.subscribe_push(user, subscription.as_json())
        created = await producer.enqueue_batch(
            [
                {"user_id": user, "title": f"batch {i}", "message": "m", "channels": CHANNELS}
                for i in range(total)
            ]
        )
        ids = [str(n["id"]) for n in created]

        # A full batch in flight: its emails accepted, its pushes held open at the peer.
        await push.wait_for_holding(concurrency, timeout=30)
        await smtp.wait_for_messages(concurrency, timeout=30)
        assert first.process is not None
        signalled = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        # The signal is delivered before the peer even writes its answers, so the worker knows
        # it is stopping by the time the held pushes complete.
        released.set()
        code = await asyncio.to_thread(first.process.wait, STOP_WITHIN)
        stopped_in = time.monotonic() - signalled
        by_first = [await rows.notification(nid) for nid in ids]
        pushes_by_first = list(push.pushes)
        emails_by_first = len(smtp.messages)

        second = await procs.worker(d.env, name="second")
        after = [
            await rows.wait(nid, _settled, what=f"{nid} delivered", logs=procs.logs) for nid in ids
        ]
        assert second.running, second.tail()

    log = first.log_path.read_text(errors="replace")
    assert code == 0, log
    assert stopped_in < STOP_WITHIN
    assert "Traceback" not in log, log
    # It finished what it had started: every push it sent was answered and recorded, and it
    # left nothing leased; the rest it never touched.
    assert all(state is not None for state in by_first)
    done_by_first = [s for s in by_first if s is not None and s["status"] == "delivered"]
    assert 0 < len(done_by_first) < total
    assert all(s is not None and s["lease_owner"] is None for s in by_first)
    assert all(p.status == 201 for p in pushes_by_first), [p.status for p in pushes_by_first]
    assert len(pushes_by_first) == emails_by_first == len(done_by_first)
    # In the end: each email and each push exactly once, every channel tried once.
    assert Counter(smtp.message_ids()) == Counter(f"<{nid}@notifier.test>" for nid in ids)
    assert Counter(p.json()["id"] for p, _ in push.accepted()) == Counter(ids)
    assert len(push.pushes) == total
    for state in after:
        email, browser = state["channels"]["email"], state["channels"]["browser"]
        assert (email["status"], email["attempts"]) == ("delivered", 1), state
        assert (browser["status"], browser["attempts"]) == ("sent", 1), state
