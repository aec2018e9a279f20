"""Where scenario 3's latency goes: the p50/p99 of each stage the bench can see, read from
the service's /metrics histograms as Prometheus' ``histogram_quantile`` would."""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.figures import percentile

CLAIM_HISTOGRAM = "notifier_claim_wait_seconds"
OUTCOME_HISTOGRAM = "notifier_dispatch_latency_seconds"
FAST_PATH_HISTOGRAM = "notifier_websocket_fast_path_seconds"

Buckets = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Stages:
    """One run's p50 and p99 (ms) up to each point the bench can see."""

    api: tuple[float, float]  # POST due -> the row's created_at
    committed: tuple[float, float]  # created_at -> its group commit (the API's histogram)
    written: tuple[float, float]  # the commit -> the frame written to the socket (the API's)
    claimed: tuple[float, float]  # created_at -> claimed by the worker (histogram)
    recorded: tuple[float, float]  # created_at -> the outcome recorded (histogram)
    end_to_end: tuple[float, float]

    @classmethod
    def of(
        cls,
        api: list[float],
        fast_path: tuple[Buckets, Buckets],
        claimed: Buckets,
        recorded: Buckets,
        end_to_end: list[float],
    ) -> Stages:
        committed, written = fast_path
        return cls(
            api=(percentile(api, 50), percentile(api, 99)),
            committed=(histogram_quantile(committed, 50), histogram_quantile(committed, 99)),
            written=(histogram_quantile(written, 50), histogram_quantile(written, 99)),
            claimed=(histogram_quantile(claimed, 50), histogram_quantile(claimed, 99)),
            recorded=(histogram_quantile(recorded, 50), histogram_quantile(recorded, 99)),
            end_to_end=(percentile(end_to_end, 50), percentile(end_to_end, 99)),
        )

    def describe(self) -> str:
        stages = (
            self.api,
            self.committed,
            self.written,
            self.claimed,
            self.recorded,
            self.end_to_end,
        )
        return " / ".join(f"{p50:.1f}, {p99:.1f}" for p50, p99 in stages)


async def metrics_text(base_url: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base_url}/metrics", timeout=10)
    return response.raise_for_status().text


def fast_path_buckets(exposition: str) -> tuple[Buckets, Buckets]:
    return (
        histogram_buckets(exposition, FAST_PATH_HISTOGRAM, stage="committed"),
        histogram_buckets(exposition, FAST_PATH_HISTOGRAM, stage="written"),
    )


def bucket_growth(before: Buckets, after: Buckets) -> Buckets:
    """What a cumulative histogram gained between two scrapes (the API lives across runs)."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def histogram_buckets(exposition: str, name: str, **labels: str) -> Buckets:
    """One series of a histogram in a /metrics text: (upper bound in ms, cumulative count), in
    order; ``labels`` pick the series (besides ``le``)."""
    buckets = [
        (float(sample.labels["le"]) * 1000.0, sample.value)
        for family in text_string_to_metric_families(exposition)
        if family.name == name
        for sample in family.samples
        if sample.name.endswith("_bucket")
        and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    return sorted(buckets)


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' ``histogram_quantile``: linear within the bucket the rank falls in (q in
    0..100); a rank in the +Inf bucket gives the largest finite bound."""
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q / 100 * buckets[-1][1]
    lower_bound = lower_count = 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
