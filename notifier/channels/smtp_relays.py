"""The email channel's relays: the primary (``NOTIFIER_SMTP_HOST`` …) and the fallbacks
(``NOTIFIER_SMTP_FALLBACK_URLS``), tried in order, each behind a breaker of its own.

A send goes to the first relay whose breaker is closed. When that relay fails transiently
(connection refused or reset, a timeout, a 4xx, our credentials refused) its breaker opens for
``NOTIFIER_BREAKER_SECONDS`` and the same message goes to the next relay at once; relays whose
breaker is open come last. What is not
failed over: a permanent refusal (5xx: the message itself is refused, and another relay would
refuse it too) and an unknown outcome (the connection was lost inside DATA: the relay may have
queued the message, and a second relay would deliver it twice). A relay whose breaker is open
is still tried when every relay before it failed: with nowhere else to go a pause would only
delay mail, and the worker's retry schedule already spaces the attempts. When all fail, the
send fails transiently and the worker retries it as it would for a single relay.
docs/architecture.md, "Email relays", says how this breaker and the worker's relate.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from notifier.breaker import Breaker
from notifier.channels.base import (
    DeliveryError,
    ProviderAuthError,
    TransientError,
    UnknownOutcomeError,
)
from notifier.channels.smtp_session import RelayConnections
from notifier.metrics.smtp_relays import SmtpRelayMetrics
from notifier.models.base import utcnow
from notifier.settings import Settings
from notifier.smtp_urls import SmtpRelay

log = logging.getLogger("notifier.worker")

# One set of series per registry (a process's), however many email channels it builds.
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, SmtpRelayMetrics] = (
    weakref.WeakKeyDictionary()
)


def relay_metrics(registry: CollectorRegistry | None) -> SmtpRelayMetrics:
    if registry is None:
        return SmtpRelayMetrics()
    metrics = _METRICS.get(registry)
    if metrics is None:
        metrics = _METRICS[registry] = SmtpRelayMetrics(registry)
    return metrics


def relays_from(settings: Settings) -> list[SmtpRelay]:
    """The primary relay from the ``NOTIFIER_SMTP_*`` settings, then the fallbacks."""
    relays = list(settings.smtp_fallback_urls)
    if settings.smtp_host:
        primary = SmtpRelay(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            implicit_tls=settings.smtp_port == 465 and not settings.smtp_starttls,
        )
        relays.insert(0, primary)
    return relays


class RelayChain:
    """Sends one message through the first relay that takes it."""

    def __init__(
        self,
        relays: Sequence[SmtpRelay],
        *,
        timeout: float,
        pause_seconds: float,
        max_connections: int,
        metrics: SmtpRelayMetrics,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._relays = [RelayConnections(relay, timeout=timeout) for relay in relays]
        self._timeout = timeout
        # Sends in flight, over all relays: each holds one connection.
        self._slots = asyncio.Semaphore(max_connections)
        self._breaker = Breaker(pause_seconds=pause_seconds)
        # Relays that failed since they last took a message. While it is empty (the usual
        # case) every breaker is closed, and a send skips reading the clock and the breaker.
        self._tripped: set[str] = set()
        self._metrics = metrics
        for connections in self._relays:
            metrics.watch(connections.relay.label, self._is_open_check(connections.relay.label))

    def _is_open_check(self, label: str) -> Callable[[], bool]:
        return lambda: self._breaker.paused_until(label, utcnow()) is not None

    def _order(self) -> tuple[list[RelayConnections], list[RelayConnections]]:
        """The relays whose breaker is closed, in order, then those whose breaker is open."""
        if not self._tripped:
            return self._relays, []
        now = utcnow()
        closed: list[RelayConnections] = []
        paused: list[RelayConnections] = []
        for connections in self._relays:
            is_paused = self._breaker.paused_until(connections.relay.label, now) is not None
            (paused if is_paused else closed).append(connections)
        return closed, paused

    async def send(self, payload: bytes, sender: str, rcpt: str, needs_utf8: bool) -> str:
        """Deliver the message; the label of the relay that took it (``host:port``)."""
        if self._slots.locked():
            try:
                # Waiting for a connection of our own is bounded like a relay's answer.
                async with asyncio.timeout(self._timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise TransientError("SMTP timed out during pool") from None
        else:
            await self._slots.acquire()  # a slot is free: taken at once, nothing to bound
        try:
            closed, paused = self._order()
            failures: list[tuple[SmtpRelay, TransientError]] = []
            # A paused relay is reached only when every relay before it failed: last resort.
            for tried, connections in enumerate(closed + paused):
                label = connections.relay.label
                try:
                    await connections.send(payload, sender, rcpt, needs_utf8)
                except TransientError as exc:  # ProviderAuthError included: the relay's own
                    self._metrics.attempt(label, "transient")
                    self._trip(connections.relay, exc)
                    failures.append((connections.relay, exc))
                    continue
                except UnknownOutcomeError:
                    self._metrics.attempt(label, "unknown")
                    raise
                except DeliveryError:
                    self._metrics.attempt(label, "permanent")
                    raise
                if label in self._tripped:
                    self._tripped.discard(label)
                    self._breaker.close(label)
                self._metrics.attempt(label, "delivered")
                for skipped in paused[max(0, tried + 1 - len(closed)) :]:
                    self._metrics.attempt(skipped.relay.label, "passed_over")
                return label
            raise _every_relay_failed(failures)
        finally:
            self._slots.release()

    def _trip(self, relay: SmtpRelay, error: TransientError) -> None:
        self._tripped.add(relay.label)
        until, opened = self._breaker.trip(relay.label, utcnow())
        if opened and len(self._relays) > 1:
            log.warning(
                "SMTP relay %s passed over until %s: %s", relay.label, until.isoformat(), error
            )

    async def aclose(self) -> None:
        await asyncio.gather(*(connections.aclose() for connections in self._relays))


def _every_relay_failed(failures: list[tuple[SmtpRelay, TransientError]]) -> TransientError:
    if len(failures) == 1:
        return failures[0][1]  # one relay: its error as it is (retry_after, auth included)
    summary = "; ".join(f"{relay.label}: {error}" for relay, error in failures)
    if all(isinstance(error, ProviderAuthError) for _, error in failures):
        # Our credentials refused everywhere: the worker pauses the channel (workers/breaker.py).
        return ProviderAuthError(f"every SMTP relay refused our credentials: {summary}")
    return TransientError(f"every SMTP relay failed: {summary}"[:2000])
