"""Prometheus instruments of the webhook senders, on the process's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from notifier.metrics.instruments import LATENCY_BUCKETS


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.attempts = Counter(
            "notifier_webhook_attempts",
            "Webhook delivery attempts, by what the delivery became (succeeded, retrying, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "notifier_webhook_attempt_duration_seconds",
            "From a webhook request's start to its answer (or error)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._by_outcome: dict[str, Counter] = {}

    def attempt(self, outcome: str, seconds: float) -> None:
        # The labelled child, built once: ``labels()`` takes a lock and builds a key per call.
        counter = self._by_outcome.get(outcome)
        if counter is None:
            counter = self._by_outcome[outcome] = self.attempts.labels(outcome=outcome)
        counter.inc()
        self.duration.observe(seconds)
