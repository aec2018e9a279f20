"""Dispatch metrics: Prometheus instruments per outcome, and ``ProgressMetric`` rollups per
channel (delivery latency avg/p95, throughput, error rate) written once per recorder flush."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from notifier.metrics.instruments import ServiceMetrics, observe_all
from notifier.metrics.recorder import MetricRecorder
from notifier.models.metric import ProgressMetric
from notifier.models.notification import ChannelStatus
from workers.outcomes import Observed

_ERRORS = frozenset({ChannelStatus.FAILED, ChannelStatus.RETRYING})


@dataclass(frozen=True)
class _ChannelInstruments:
    """One channel's labelled children: ``labels()`` builds a key and takes a lock on every
    call, which showed in the worker's profile at one call per instrument per outcome."""

    attempts: Counter
    retries: Counter
    send_duration: Histogram
    dispatch_latency: Histogram


class MetricsObserver:
    def __init__(self, metrics: ServiceMetrics, recorder: MetricRecorder | None = None) -> None:
        self.metrics = metrics
        self._latencies: dict[str, list[float]] = defaultdict(list)
        self._outcomes: dict[str, int] = defaultdict(int)
        self._errors: dict[str, int] = defaultdict(int)
        self._window_start = time.monotonic()
        self._instruments: dict[str, _ChannelInstruments] = {}
        self._deliveries: dict[tuple[str, ChannelStatus], Counter] = {}
        if recorder is not None:
            recorder.before_flush(self.rollups)

    def claimed(self, waited_seconds: Sequence[float]) -> None:
        self.metrics.claimed.inc(len(waited_seconds))
        observe_all(self.metrics.claim_wait, [max(seconds, 0.0) for seconds in waited_seconds])

    def outcome(
        self,
        channel: str,
        status: ChannelStatus,
        *,
        send_seconds: float,
        waited_seconds: float,
        tries: int,
    ) -> None:
        self.outcomes([Observed(channel, status, send_seconds, waited_seconds, tries)])

    def outcomes(self, observed: Sequence[Observed]) -> None:
        """A batch's outcomes: each instrument incremented (or its histogram observed) once
        per channel and outcome for the batch, not once per outcome."""
        deliveries: dict[tuple[str, ChannelStatus], int] = defaultdict(int)
        by_channel: dict[str, list[Observed]] = defaultdict(list)
        for o in observed:
            deliveries[o.channel, o.status] += 1
            by_channel[o.channel].append(o)
        for key, count in deliveries.items():
            delivered = self._deliveries.get(key)
            if delivered is None:
                delivered = self._deliveries[key] = self.metrics.deliveries.labels(
                    channel=key[0], outcome=key[1].value
                )
            delivered.inc(count)
        for channel, outcomes in by_channel.items():
            instruments = self._instruments.get(channel) or self._instruments_of(channel)
            tried = [o for o in outcomes if o.tries]
            if tried:
                instruments.attempts.inc(sum(o.tries for o in tried))
                observe_all(instruments.send_duration, [o.send_seconds for o in tried])
                retries = sum(o.tries - 1 for o in tried)
                if retries:
                    instruments.retries.inc(retries)
            waited = [o.waited_seconds for o in outcomes]
            observe_all(instruments.dispatch_latency, [max(w, 0.0) for w in waited])
            self._latencies[channel] += [w * 1000.0 for w in waited]
            self._outcomes[channel] += len(outcomes)
            self._errors[channel] += sum(1 for o in outcomes if o.status in _ERRORS)

    def _instruments_of(self, channel: str) -> _ChannelInstruments:
        m = self.metrics
        made = self._instruments[channel] = _ChannelInstruments(
            attempts=m.attempts.labels(channel=channel),
            retries=m.retries.labels(channel=channel),
            send_duration=m.send_duration.labels(channel=channel),
            dispatch_latency=m.dispatch_latency.labels(channel=channel),
        )
        return made

    def channel_paused(self, channel: str) -> None:
        self.metrics.channel_paused.labels(channel=channel).inc()

    def rollups(self) -> list[ProgressMetric]:
        """The rows for the window since the last call, then start a new window."""
        now = time.monotonic()
        elapsed = max(now - self._window_start, 1e-6)
        rows: list[ProgressMetric] = []
        for channel, latencies in self._latencies.items():
            labels = {"channel": channel}
            avg = ProgressMetric.create_response_time_metric(
                "delivery_latency", statistics.fmean(latencies), labels=labels
            )
            avg.is_aggregated, avg.aggregation_type = True, "avg"
            p95 = ProgressMetric.create_response_time_metric(
                "delivery_latency", _p95(latencies), labels=labels
            )
            p95.is_aggregated, p95.aggregation_type = True, "p95"
            rows += [
                avg,
                p95,
                ProgressMetric.create_throughput_metric(
                    "delivery_throughput", self._outcomes[channel] / elapsed, labels=labels
                ),
                ProgressMetric.create_error_rate_metric(
                    "delivery_error_rate",
                    self._errors[channel],
                    self._outcomes[channel],
                    labels=labels,
                ),
            ]
        self._latencies.clear()
        self._outcomes.clear()
        self._errors.clear()
        self._window_start = now
        return rows


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
