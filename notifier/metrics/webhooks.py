"""Prometheus instruments of the webhook senders, on the process's registry."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from notifier.metrics.instruments import LATENCY_BUCKETS, observe_all


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

    def observe_attempts(self, attempts: Iterable[tuple[str, float]]) -> None:
        """A batch of attempts, each what its delivery became and how long it took: the
        counters and the histogram moved once per outcome and per bucket in the batch, not once
        per attempt (each ``inc`` takes a lock; a histogram's ``observe`` two, ~4 us)."""
        counts: dict[str, int] = {}
        durations: list[float] = []
        for outcome, seconds in attempts:
            counts[outcome] = counts.get(outcome, 0) + 1
            durations.append(seconds)
        observe_all(self.duration, durations)
        for outcome, n in counts.items():
            # The labelled child, built once: ``labels()`` takes a lock and builds a key per call.
            counter = self._by_outcome.get(outcome)
            if counter is None:
                counter = self._by_outcome[outcome] = self.attempts.labels(outcome=outcome)
            counter.inc(n)
