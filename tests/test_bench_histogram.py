"""Scenario 3's split of the latency: the worker's own histograms, read back from its /metrics
text as Prometheus' ``histogram_quantile`` would. A real prometheus_client registry with the
service's instruments writes the text."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from prometheus_client import generate_latest

from bench.latency_stages import histogram_buckets, histogram_quantile
from notifier.metrics.instruments import ServiceMetrics

OUTCOMES = "notifier_dispatch_latency_seconds"


def _exposition(
    websocket_seconds: list[float], email_seconds: list[float], claim_seconds: Sequence[float] = ()
) -> str:
    metrics = ServiceMetrics()
    for seconds in websocket_seconds:
        metrics.dispatch_latency.labels(channel="websocket").observe(seconds)
    for seconds in email_seconds:
        metrics.dispatch_latency.labels(channel="email").observe(seconds)
    for seconds in claim_seconds:
        metrics.claim_wait.observe(seconds)
    return generate_latest(metrics.registry).decode()


def _websocket(exposition: str) -> list[tuple[float, float]]:
    return histogram_buckets(exposition, OUTCOMES, channel="websocket")


def test_reads_the_series_asked_for_only() -> None:
    # 10 within 5 ms, 10 in (10, 25] ms; the email outcomes and the claims are other series.
    text = _exposition([0.004] * 10 + [0.02] * 10, [3.0] * 50, [0.0005] * 7)
    buckets = _websocket(text)
    assert buckets[0] == (1.0, 0.0)
    assert dict(buckets)[5.0] == 10.0
    assert dict(buckets)[25.0] == 20.0
    assert buckets[-1] == (math.inf, 20.0)
    claims = histogram_buckets(text, "notifier_claim_wait_seconds")
    assert claims[0] == (1.0, 7.0)
    assert claims[-1] == (math.inf, 7.0)


def test_quantiles_interpolate_within_the_bucket_of_the_rank() -> None:
    buckets = _websocket(_exposition([0.004] * 10 + [0.02] * 10, []))
    assert histogram_quantile(buckets, 50) == pytest.approx(5.0)  # the 10th of 20: end of (2.5, 5]
    assert histogram_quantile(buckets, 75) == pytest.approx(17.5)  # half way through (10, 25]
    assert histogram_quantile(buckets, 25) == pytest.approx(3.75)  # half way through (2.5, 5]


def test_a_rank_past_every_finite_bucket_reads_the_largest_bound() -> None:
    buckets = _websocket(_exposition([0.002, 400.0], []))
    assert histogram_quantile(buckets, 99) == 300_000.0  # 300 s, the last finite bucket


def test_no_outcomes_is_no_figure() -> None:
    assert math.isnan(histogram_quantile(_websocket(_exposition([], [1.0])), 50))
