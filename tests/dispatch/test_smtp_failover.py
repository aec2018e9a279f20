"""Email relay failover through the real worker, with two real SMTP servers (aiosmtpd), on
SQLite and PostgreSQL: what the notification's record says (``provider_id`` names the relay
that took the message) and what each server received. The channel's own view (what is not
failed over, the series per relay) is tests/channels/test_smtp_failover.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import new_user
from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.dispatch.test_worker_process import worker_process
from tests.peers.base import free_port

PAUSE = 1.0  # NOTIFIER_BREAKER_SECONDS in these tests


@pytest.fixture
async def fallback() -> AsyncIterator[DispatchSmtpPeer]:
    async with DispatchSmtpPeer() as peer:
        yield peer


def relays(primary_port: int, fallback: DispatchSmtpPeer) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": primary_port,
        "smtp_from": "Notifier <notify@notifier.test>",
        "smtp_fallback_urls": f"smtp://{fallback.host}:{fallback.port}",
        "breaker_seconds": PAUSE,
    }


async def email(stack: Stack) -> dict[str, Any]:
    """Enqueue one email and wait for the worker to settle it; its channel's record."""
    user = new_user()
    await stack.put_recipient(user, email=f"{user}@example.com")
    created = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
    body = await stack.wait_channel(created["id"], "email", "delivered", within=15)
    return dict(body["delivery_status"]["email"])


async def test_primary_refusing_connections_fails_over(
    db_url: str, fallback: DispatchSmtpPeer
) -> None:
    refusing = free_port()  # nothing listens there
    async with running_stack(db_url, **relays(refusing, fallback)) as stack:
        record = await email(stack)

    assert record["provider_id"].startswith(f"127.0.0.1:{fallback.port} <")
    assert record["attempts"] == 1  # failed over within the one attempt: no retry needed
    assert len(fallback.messages) == 1


async def test_primary_answering_451_fails_over(
    db_url: str, smtp_peer: DispatchSmtpPeer, fallback: DispatchSmtpPeer
) -> None:
    smtp_peer.script("MAIL", "451 4.3.0 Try again later")
    async with running_stack(db_url, **relays(smtp_peer.port, fallback)) as stack:
        record = await email(stack)

    assert record["provider_id"].startswith(f"127.0.0.1:{fallback.port} <")
    assert record["attempts"] == 1
    assert smtp_peer.messages == [] and len(fallback.messages) == 1


async def test_primary_is_used_again_once_back_and_the_pause_is_over(
    db_url: str, smtp_peer: DispatchSmtpPeer, fallback: DispatchSmtpPeer
) -> None:
    port = smtp_peer.port
    await smtp_peer.stop()  # the primary goes away: connections refused
    async with running_stack(db_url, **relays(port, fallback)) as stack:
        failed_over = await email(stack)
        tripped = time.monotonic()
        await smtp_peer.start(port=port)  # back where it was
        connections_when_back = smtp_peer.connections
        during_pause = await email(stack)
        within_pause = time.monotonic() - tripped < PAUSE
        # The pause is a span of time: there is no event to await but its end.
        await asyncio.sleep(max(0.0, tripped + PAUSE - time.monotonic()))
        after_pause = await email(stack)

    backup = f"127.0.0.1:{fallback.port} <"
    assert failed_over["provider_id"].startswith(backup)
    if within_pause:  # on a loaded machine the second email may come after the pause
        assert during_pause["provider_id"].startswith(backup)
        assert smtp_peer.connections == connections_when_back + 1  # only the third one
    assert after_pause["provider_id"].startswith(f"127.0.0.1:{port} <")
    assert len(smtp_peer.messages) == 1


async def test_every_relay_down_retries_as_before_then_delivers(
    db_url: str, fallback: DispatchSmtpPeer
) -> None:
    refusing = free_port()
    fallback_port = fallback.port
    await fallback.stop()
    async with running_stack(db_url, **relays(refusing, fallback)) as stack:
        user = new_user()
        await stack.put_recipient(user, email=f"{user}@example.com")
        created = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
        waiting = await stack.wait_until(
            created["id"],
            lambda n: (
                n["delivery_status"]["email"]["status"] == "retrying"
                and n["delivery_status"]["email"]["attempts"] >= 1
            ),
            within=15,
        )
        await fallback.start(port=fallback_port)
        delivered = await stack.wait_channel(created["id"], "email", "delivered", within=15)

    error = waiting["delivery_status"]["email"]["last_error"]
    assert "every SMTP relay failed" in error
    assert f"127.0.0.1:{refusing}" in error and f"127.0.0.1:{fallback_port}" in error
    record = delivered["delivery_status"]["email"]
    assert record["attempts"] >= 2
    assert record["provider_id"].startswith(f"127.0.0.1:{fallback_port} <")
    assert len(fallback.messages) == 1


async def test_a_worker_process_serves_the_series_per_relay(
    fresh_pg_url: str, fallback: DispatchSmtpPeer, tmp_path: Path
) -> None:
    """The real `notifier worker`: its /metrics (WORKER_METRICS_PORT) has each relay's series."""
    refusing, metrics_port = free_port(), free_port()
    async with running_stack(fresh_pg_url, worker=False, **relays(refusing, fallback)) as stack:
        user = new_user()
        await stack.put_recipient(user, email=f"{user}@example.com")
        created = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
        env = {
            "smtp_fallback_urls": f"smtp://{fallback.host}:{fallback.port}",
            "breaker_seconds": "600",  # still open when scraped
            "worker_metrics_port": str(metrics_port),
        }
        async with worker_process(stack, tmp_path / "worker.log", **env):
            body = await stack.wait_channel(created["id"], "email", "delivered", within=30)
            async with httpx.AsyncClient() as client:
                scraped = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text

    primary, backup = f"127.0.0.1:{refusing}", f"127.0.0.1:{fallback.port}"
    assert body["delivery_status"]["email"]["provider_id"].startswith(f"{backup} <")
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line.startswith("notifier_smtp_relay")
    }
    attempts = "notifier_smtp_relay_attempts_total"
    assert samples[f'{attempts}{{outcome="transient",relay="{primary}"}}'] == 1
    assert samples[f'{attempts}{{outcome="delivered",relay="{backup}"}}'] == 1
    assert samples[f'notifier_smtp_relay_breaker_open{{relay="{primary}"}}'] == 1
    assert samples[f'notifier_smtp_relay_breaker_open{{relay="{backup}"}}'] == 0
