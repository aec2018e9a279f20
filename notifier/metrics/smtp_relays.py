"""Prometheus series of the email channel's relays (docs/architecture.md, "Email relays"), on
the worker process's registry: what each relay did with the sends it was given, and whether its
breaker is open now."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

# What one try on one relay ended as.
OUTCOMES = ("delivered", "transient", "permanent", "unknown", "passed_over")


class SmtpRelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.attempts = Counter(
            "notifier_smtp_relay_attempts",
            "Sends given to an SMTP relay, by outcome (delivered; transient: failed over or "
            "retried; permanent: refused; unknown: lost inside DATA; passed_over: its breaker "
            "was open)",
            ["relay", "outcome"],
            registry=self.registry,
        )
        self.open = Gauge(
            "notifier_smtp_relay_breaker_open",
            "1 while the relay's breaker is open (it is passed over while another relay is "
            "available), else 0",
            ["relay"],
            registry=self.registry,
        )
        self._counters: dict[tuple[str, str], Counter] = {}

    def watch(self, relay: str, is_open: Callable[[], bool]) -> None:
        """Read the relay's breaker at each scrape, so the gauge drops when the pause ends."""
        self.open.labels(relay=relay).set_function(lambda: 1.0 if is_open() else 0.0)

    def attempt(self, relay: str, outcome: str) -> None:
        # The labelled child, built once: ``labels()`` takes a lock and builds a key per call.
        counter = self._counters.get((relay, outcome))
        if counter is None:
            counter = self._counters[relay, outcome] = self.attempts.labels(
                relay=relay, outcome=outcome
            )
        counter.inc()
