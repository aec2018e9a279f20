"""The email channel's relays against two real SMTP servers (aiosmtpd): what is failed over and
what is not, the per-relay breaker, and the Prometheus series per relay. The worker's view of
the same (records, retries, both databases) is tests/dispatch/test_smtp_failover.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from notifier.channels.base import Destination, PermanentError, UnknownOutcomeError
from notifier.channels.email import EmailChannel
from notifier.models.notification import ChannelStatus
from notifier.settings import Settings
from tests.channels import make_message
from tests.peers import SmtpPeer
from tests.peers.base import free_port

TO = Destination(user_id="user-1", email="alice@example.com")
PAUSE = 1.0  # NOTIFIER_BREAKER_SECONDS in these tests


@pytest.fixture
async def fallback() -> AsyncIterator[SmtpPeer]:
    async with SmtpPeer() as peer:
        yield peer


def relay_settings(primary_port: int, fallback: SmtpPeer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": primary_port,
        "smtp_from": "Notifier <notify@notifier.test>",
        "smtp_timeout_seconds": 2.0,
        "smtp_fallback_urls": f"smtp://{fallback.host}:{fallback.port}",
        "breaker_seconds": PAUSE,
        **overrides,
    }
    return Settings(**values)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_refused_connection_fails_over_and_the_series_say_so(
    fallback: SmtpPeer,
) -> None:
    primary = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    registry = CollectorRegistry()
    channel = EmailChannel(
        relay_settings(int(primary.split(":")[1]), fallback), metrics_registry=registry
    )
    try:
        first = await channel.send(make_message(), TO)
        second = await channel.send(make_message(), TO)
    finally:
        await channel.aclose()

    backup = f"{fallback.host}:{fallback.port}"
    assert first.status is ChannelStatus.DELIVERED
    assert first.provider_id is not None and first.provider_id.startswith(f"{backup} <")
    assert second.provider_id is not None and second.provider_id.startswith(f"{backup} <")
    assert len(await fallback.wait_for_messages(2)) == 2
    attempts = "notifier_smtp_relay_attempts_total"
    assert sample(registry, attempts, relay=primary, outcome="transient") == 1
    # The second send did not knock on the refusing relay: its breaker was open.
    assert sample(registry, attempts, relay=primary, outcome="passed_over") == 1
    assert sample(registry, attempts, relay=backup, outcome="delivered") == 2
    assert sample(registry, "notifier_smtp_relay_breaker_open", relay=primary) == 1
    assert sample(registry, "notifier_smtp_relay_breaker_open", relay=backup) == 0
    # The gauge is read at scrape time: once the pause is over it reads closed again.
    await asyncio.sleep(PAUSE)  # the pause is a span of time; there is no event to await
    assert sample(registry, "notifier_smtp_relay_breaker_open", relay=primary) == 0


async def test_a_451_fails_over_and_the_primary_is_used_again_after_the_pause(
    smtp_peer: SmtpPeer, fallback: SmtpPeer
) -> None:
    smtp_peer.script("MAIL", "451 4.3.0 Try again later")
    channel = EmailChannel(relay_settings(smtp_peer.port, fallback))
    try:
        first = await channel.send(make_message(), TO)
        tripped = asyncio.get_running_loop().time()
        during = await channel.send(make_message(), TO)
        paused_for = asyncio.get_running_loop().time() - tripped
        await asyncio.sleep(PAUSE)
        after = await channel.send(make_message(), TO)
    finally:
        await channel.aclose()

    primary, backup = f"127.0.0.1:{smtp_peer.port}", f"{fallback.host}:{fallback.port}"
    assert paused_for < PAUSE, "the second send came too late to see the breaker open"
    assert first.provider_id is not None and first.provider_id.startswith(backup)
    assert during.provider_id is not None and during.provider_id.startswith(backup)
    assert after.provider_id is not None and after.provider_id.startswith(primary)
    assert len(smtp_peer.messages) == 1 and len(fallback.messages) == 2


async def test_a_permanent_refusal_is_not_failed_over(
    smtp_peer: SmtpPeer, fallback: SmtpPeer
) -> None:
    smtp_peer.script("MAIL", "550 5.7.1 Message refused")
    channel = EmailChannel(relay_settings(smtp_peer.port, fallback))
    try:
        with pytest.raises(PermanentError, match="550"):
            await channel.send(make_message(), TO)
    finally:
        await channel.aclose()
    assert fallback.connections == 0 and fallback.messages == []


async def test_a_connection_lost_inside_data_is_not_failed_over(
    smtp_peer: SmtpPeer, fallback: SmtpPeer
) -> None:
    """The primary may have queued it: a second relay would deliver it twice."""
    smtp_peer.script("DATA", "drop")
    channel = EmailChannel(relay_settings(smtp_peer.port, fallback))
    try:
        with pytest.raises(UnknownOutcomeError):
            await channel.send(make_message(), TO)
    finally:
        await channel.aclose()
    assert fallback.connections == 0 and fallback.messages == []


async def test_fallback_credentials_and_every_relay_down(fallback: SmtpPeer) -> None:
    """The fallback's user and password come from its URL; with both relays refusing, the
    error names each, and when both breakers are open both are still tried."""
    fallback.credentials = ("relay-user", "p@ss,word")
    down = free_port()
    settings = relay_settings(
        down,
        fallback,
        smtp_fallback_urls=f"smtp://relay-user:p%40ss%2Cword@127.0.0.1:{fallback.port}",
    )
    channel = EmailChannel(settings)
    try:
        sent = await channel.send(make_message(), TO)
        assert sent.provider_id is not None and sent.provider_id.startswith("127.0.0.1:")
        assert fallback.failed_logins == 0 and len(fallback.messages) == 1
        await fallback.stop()
        with pytest.raises(Exception, match="every SMTP relay failed") as failed:
            await channel.send(make_message(), TO)
        # Both breakers are open now, and both relays are tried again all the same.
        with pytest.raises(Exception, match="every SMTP relay failed") as again:
            await channel.send(make_message(), TO)
    finally:
        await channel.aclose()
    for error in (failed.value, again.value):
        assert f"127.0.0.1:{down}" in str(error) and f"127.0.0.1:{fallback.port}" in str(error)
        assert "p@ss" not in str(error)
