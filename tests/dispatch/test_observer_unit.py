"""The worker's Prometheus series per claim and per outcome (workers/observer.py), read from a
real registry: the labelled children it keeps per channel and per (channel, outcome) must count
each outcome in its own series, however outcomes of different channels and statuses interleave;
each claimed notification counts once, with its time in the queue."""

from __future__ import annotations

import pytest

from notifier.metrics.instruments import ServiceMetrics
from notifier.models.notification import ChannelStatus
from workers.observer import MetricsObserver
from workers.outcomes import Observed


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


def test_a_batch_observed_at_once_makes_the_same_series_as_one_by_one() -> None:
    """``outcomes`` (a claimed batch's, in one call) and ``outcome`` for each: same samples."""
    batch = [
        Observed("email", ChannelStatus.SENT, 0.004, 0.02, 1),
        Observed("websocket", ChannelStatus.DELIVERED, 0.0, 0.0007, 1),
        Observed("email", ChannelStatus.RETRYING, 1.5, 7.0, 3),
        Observed("email", ChannelStatus.SKIPPED, 0.0, -0.1, 0),
        Observed("websocket", ChannelStatus.SENT, 0.3, 400.0, 1),
        Observed("email", ChannelStatus.SENT, 0.005, 0.005, 1),  # on a bucket's bound
    ]
    at_once, one_by_one = ServiceMetrics(), ServiceMetrics()
    MetricsObserver(at_once).outcomes(batch)
    single = MetricsObserver(one_by_one)
    for o in batch:
        single.outcome(
            o.channel,
            o.status,
            send_seconds=o.send_seconds,
            waited_seconds=o.waited_seconds,
            tries=o.tries,
        )
    MetricsObserver(at_once).claimed([0.0001, 0.3, 12.0])
    MetricsObserver(one_by_one).claimed([0.0001, 0.3, 12.0])

    def samples(metrics: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    expected = samples(one_by_one)
    assert (
        expected[
            ("notifier_dispatch_latency_seconds_bucket", (("channel", "email"), ("le", "0.005")))
        ]
        == 2
    )  # the skipped one (negative: 0) and the one on the bound
    assert samples(at_once) == pytest.approx(expected)
