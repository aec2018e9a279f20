"""The worker's Prometheus series per claim and per outcome (workers/observer.py), read from a
real registry: the labelled children it keeps per channel and per (channel, outcome) must count
each outcome in its own series, however outcomes of different channels and statuses interleave;
each claimed notification counts once, with its time in the queue."""

from __future__ import annotations

import pytest

from notifier.metrics.instruments import ServiceMetrics
from notifier.models.notification import ChannelStatus
from workers.observer import MetricsObserver


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_each_outcome_counts_in_its_own_series() -> None:
    metrics = ServiceMetrics()
    observer = MetricsObserver(metrics)
    outcomes = [
        ("email", ChannelStatus.SENT, 1),
        ("websocket", ChannelStatus.SENT, 1),
        ("email", ChannelStatus.RETRYING, 3),
        ("email", ChannelStatus.SENT, 1),
        ("sms", ChannelStatus.SKIPPED, 0),
    ]
    for channel, status, tries in outcomes:
        observer.outcome(channel, status, send_seconds=0.01, waited_seconds=0.5, tries=tries)

    deliveries = "notifier_deliveries_total"
    assert sample(metrics, deliveries, channel="email", outcome="sent") == 2
    assert sample(metrics, deliveries, channel="email", outcome="retrying") == 1
    assert sample(metrics, deliveries, channel="websocket", outcome="sent") == 1
    assert sample(metrics, deliveries, channel="sms", outcome="skipped") == 1
    assert sample(metrics, deliveries, channel="websocket", outcome="retrying") == 0
    assert sample(metrics, "notifier_delivery_attempts_total", channel="email") == 5
    assert sample(metrics, "notifier_delivery_retries_total", channel="email") == 2
    assert sample(metrics, "notifier_delivery_attempts_total", channel="sms") == 0
    assert sample(metrics, "notifier_send_duration_seconds_count", channel="email") == 3
    assert sample(metrics, "notifier_dispatch_latency_seconds_count", channel="sms") == 1


def test_each_claimed_notification_counts_once_with_its_time_in_the_queue() -> None:
    metrics = ServiceMetrics()
    observer = MetricsObserver(metrics)
    observer.claimed([0.002, 0.004, 0.3])
    observer.claimed([])  # an empty claim changes nothing
    observer.claimed([-0.001])  # a clock step back between hosts counts as no wait

    assert sample(metrics, "notifier_claimed_notifications_total") == 4
    assert sample(metrics, "notifier_claim_wait_seconds_count") == 4
    assert sample(metrics, "notifier_claim_wait_seconds_bucket", le="0.001") == 1
    assert sample(metrics, "notifier_claim_wait_seconds_bucket", le="0.005") == 3
    assert sample(metrics, "notifier_claim_wait_seconds_sum") == pytest.approx(0.306)
