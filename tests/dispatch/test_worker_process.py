"""A real `python -m runtime worker` process, killed mid-batch (SIGKILL) or stopped (SIGTERM):
the next worker carries on, every notification ends delivered, and nothing the SMTP peer had
already accepted is sent again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def worker_process(
    stack: Stack, log: Path, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    settings = stack.service.settings
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    assert settings.token_secret is not None and settings.smtp_host is not None
    environment.update(
        {
            "NOTIFIER_DATABASE_URL": settings.database_url,
            "NOTIFIER_API_KEYS": "worker-test-key-0123456789",
            "NOTIFIER_TOKEN_SECRET": settings.token_secret.get_secret_value(),
            "NOTIFIER_SMTP_HOST": settings.smtp_host,
            "NOTIFIER_SMTP_PORT": str(settings.smtp_port),
            "NOTIFIER_SMTP_FROM": str(settings.smtp_from),
            "NOTIFIER_SMTP_STARTTLS": "false",
            "NOTIFIER_SMTP_TIMEOUT_SECONDS": "30",
            "NOTIFIER_RETRY_BASE_SECONDS": "0.05",
            "NOTIFIER_POLL_INTERVAL_SECONDS": "0.5",
            "NOTIFIER_LOG_LEVEL": "warning",
            **{f"NOTIFIER_{k.upper()}": v for k, v in env.items()},
        }
    )
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runtime",
            "worker",
            cwd=ROOT,
            env=environment,
            stdout=stderr,
            stderr=stderr,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def enqueue_emails(stack: Stack, count: int) -> list[str]:
    user = f"w-{uuid.uuid4().hex[:8]}"
    await stack.put_recipient(user, email=f"{user}@example.com")
    created = await stack.notify_batch(
        [
            {"user_id": user, "title": f"n{i}", "message": "m", "channels": ["email"]}
            for i in range(count)
        ]
    )
    return [n["id"] for n in created]


async def count_rows(stack: Stack, where: str) -> int:
    [(count,)] = await stack.sql(f"SELECT count(*) FROM notifications WHERE {where}")
    return int(count)


async def wait_rows(stack: Stack, where: str, expected: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (found := await count_rows(stack, where)) != expected:
        assert time.monotonic() < deadline, f"{found} rows where {where}, not {expected}"
        await asyncio.sleep(0.1)  # polling the database: there is no event to await


async def test_sigkill_mid_batch_then_another_worker_finishes(
    fresh_pg_url: str, smtp_peer: DispatchSmtpPeer, tmp_path: Path
) -> None:
    accepted_before_kill = 10
    smtp_peer.accept_budget = accepted_before_kill  # then DATA stalls: sends stay in flight
    log = tmp_path / "worker.log"
    async with running_stack(
        fresh_pg_url, worker=False, lease_seconds=2, **smtp_peer.settings()
    ) as stack:
        ids = await enqueue_emails(stack, 40)
        async with worker_process(stack, log, lease_seconds="2") as process:
            # Ten accepted and recorded, and more on the wire that the peer never answers.
            await smtp_peer.wait_until(
                lambda: (
                    len(smtp_peer.accepted) >= accepted_before_kill
                    and len(smtp_peer.arrivals) >= accepted_before_kill + 2
                ),
                within=60,
            )
            await wait_rows(stack, "status = 'delivered'", accepted_before_kill, within=10)
            process.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
        accepted = list(smtp_peer.accepted)
        leased = await count_rows(stack, "lease_owner IS NOT NULL")
        smtp_peer.accept_budget = None

        await stack.start_worker()
        await wait_rows(stack, "status = 'delivered'", len(ids), within=60)
        attempts = await stack.sql("SELECT sum(attempts) FROM notification_deliveries")

    received = smtp_peer.received_ids()
    assert len(accepted) == accepted_before_kill
    assert leased > 0, "the kill should land while the worker holds leases"
    for message_id in accepted:
        assert received[message_id] == 1, f"{message_id} was accepted, then sent again"
    assert set(received) == {f"<{i}@notifier.test>" for i in ids}
    # Resent: only those the peer had taken in but never answered.
    stalled = {m for m, _ in smtp_peer.arrivals} - set(accepted)
    assert {m for m, n in received.items() if n > 1} <= stalled
    assert attempts == [(len(ids),)]


async def test_sigterm_drains_and_exits_zero(
    fresh_pg_url: str, smtp_peer: DispatchSmtpPeer, tmp_path: Path
) -> None:
    smtp_peer.data_delay = 0.2  # a slow server: the signal lands while sends are in flight
    log = tmp_path / "worker.log"
    async with running_stack(
        fresh_pg_url, worker=False, lease_seconds=5, **smtp_peer.settings()
    ) as stack:
        ids = await enqueue_emails(stack, 30)
        async with worker_process(stack, log, lease_seconds="5", worker_concurrency="4") as process:
            await smtp_peer.wait_until(lambda: len(smtp_peer.arrivals) >= 6, within=60)
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = await asyncio.wait_for(process.wait(), 20)
            stopped_in = time.monotonic() - started
        in_flight_at_exit = len(smtp_peer.arrivals) - len(smtp_peer.accepted)
        delivered_by_first = await count_rows(stack, "status = 'delivered'")
        still_leased = await count_rows(stack, "lease_owner IS NOT NULL")
        accepted_by_first = len(smtp_peer.accepted)

        await stack.start_worker()
        await wait_rows(stack, "status = 'delivered'", len(ids), within=60)

    output = log.read_text(errors="replace")
    assert code == 0, output
    assert stopped_in < 10
    assert "Traceback" not in output, output
    assert in_flight_at_exit == 0  # it finished what it had started
    assert delivered_by_first == accepted_by_first  # and recorded every one of them
    assert 0 < delivered_by_first < len(ids)
    assert still_leased == 0  # nothing left leased to a process that is gone
    received = smtp_peer.received_ids()
    assert set(received) == {f"<{i}@notifier.test>" for i in ids}
    assert max(received.values()) == 1
