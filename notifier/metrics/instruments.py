"""Prometheus instruments, one registry per process (never the global default registry, so
tests and embedded runs do not collide)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From 1 ms: a websocket notification's stages take a few milliseconds each.
_SUB_SECOND = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
LATENCY_BUCKETS = (*_SUB_SECOND, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "notifier_deliveries",
            "Channel outcomes recorded by dispatch workers",
            ["channel", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "notifier_delivery_attempts", "Tries to send on a channel", ["channel"], registry=r
        )
        self.retries = Counter(
            "notifier_delivery_retries",
            "Tries beyond the first for one notification's channel",
            ["channel"],
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "notifier_dispatch_latency_seconds",
            "From when a notification was due to its channel's outcome, recorded",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.send_duration = Histogram(
            "notifier_send_duration_seconds",
            "Time spent in a channel's send, in-process retries included",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.claimed = Counter(
            "notifier_claimed_notifications", "Notifications leased by workers", registry=r
        )
        self.claim_wait = Histogram(
            "notifier_claim_wait_seconds",
            "From when a notification was due to a worker's claim of it (time in the queue)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fast_path = Histogram(
            "notifier_websocket_fast_path_seconds",
            "The websocket fast path in the API process, by stage: committed = from the row's "
            "creation (the request's) to its group's commit; written = from the commit to the "
            "frame written to this process's socket",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "notifier_queue_depth",
            "Notifications by status (sampled at scrape)",
            ["status"],
            registry=r,
        )
        self.websocket_connections = Gauge(
            "notifier_websocket_connections", "Open WebSockets on this API process", registry=r
        )
        self.channel_paused = Counter(
            "notifier_channel_paused",
            "Times a channel paused because the provider refused our credentials",
            ["channel"],
            registry=r,
        )


def observe_all(histogram: Histogram, values: Iterable[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, with one increment per bucket and one of
    the sum (each ``observe`` takes their locks once per value: a worker's batch of outcomes
    showed in its profile). The series are the same as ``observe``'s. ``histogram``: an
    unlabelled histogram or a labelled child."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # not the client we know
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    amount = 0.0
    for value in values:
        # ``observe`` counts a value in the first bucket whose bound is >= it (+Inf last).
        index = bisect_left(bounds, value)
        counts[index] = counts.get(index, 0) + 1
        amount += value
    if not counts:
        return
    total.inc(amount)
    for index, count in counts.items():
        buckets[index].inc(count)
