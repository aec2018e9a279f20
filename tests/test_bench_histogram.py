"""Scenario 3's split of the latency: the worker's own histogram, read back from its /metrics
text as Prometheus' ``histogram_quantile`` would. A real prometheus_client registry with the
service's instruments writes the text."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest

from bench.scenario_latency import histogram_quantile, websocket_buckets
from notifier.metrics.instruments import ServiceMetrics


def _exposition(websocket_seconds: list[float], email_seconds: list[float]) -> str:
    metrics = ServiceMetrics()
    for seconds in websocket_seconds:
        metrics.dispatch_latency.labels(channel="websocket").observe(seconds)
    for seconds in email_seconds:
        metrics.dispatch_latency.labels(channel="email").observe(seconds)
    return generate_latest(metrics.registry).decode()


def test_reads_the_websocket_series_only() -> None:
    # 10 within 5 ms, 10 in (10, 25] ms; the email outcomes are another series.
    text = _exposition([0.002] * 10 + [0.02] * 10, [3.0] * 50)
    buckets = websocket_buckets(text)
    assert buckets[0] == (5.0, 10.0)
    assert buckets[-1] == (math.inf, 20.0)
    assert dict(buckets)[25.0] == 20.0


def test_quantiles_interpolate_within_the_bucket_of_the_rank() -> None:
    buckets = websocket_buckets(_exposition([0.002] * 10 + [0.02] * 10, []))
    assert histogram_quantile(buckets, 50) == pytest.approx(5.0)  # the 10th of 20: end of (0, 5]
    assert histogram_quantile(buckets, 75) == pytest.approx(17.5)  # half way through (10, 25]
    assert histogram_quantile(buckets, 25) == pytest.approx(2.5)


def test_a_rank_past_every_finite_bucket_reads_the_largest_bound() -> None:
    buckets = websocket_buckets(_exposition([0.002, 400.0], []))
    assert histogram_quantile(buckets, 99) == 300_000.0  # 300 s, the last finite bucket


def test_no_outcomes_is_no_figure() -> None:
    assert math.isnan(histogram_quantile(websocket_buckets(_exposition([], [1.0])), 50))
