"""``GET /v1/metrics``: stored ``ProgressMetric`` rows, aggregated over a time window."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, StringConstraints

from notifier.api.deps import ProducerDep, SessionDep
from notifier.api.errors import Unprocessable
from notifier.models.base import utcnow
from notifier.schemas.common import IsoDatetime
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.storage.metrics import metric_window

router = APIRouter(
    prefix="/v1/metrics", tags=["metrics"], responses=error_responses(*AUTHENTICATED)
)

# Text compared with stored columns: no control characters (PostgreSQL refuses NUL: a 500).
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
_LABEL = r"^[^:\x00-\x1f\x7f]+:[^\x00-\x1f\x7f]*$"  # key:value, the key without a colon


class MetricPoint(BaseModel):
    timestamp: AwareDatetime
    value: float
    labels: dict[str, Any]
    aggregation_type: str | None


class MetricSummary(BaseModel):
    name: str
    unit: str | None
    since: AwareDatetime
    until: AwareDatetime
    count: int
    avg: float | None
    p95: float | None
    max: float | None
    min: float | None
    points: list[MetricPoint]


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@router.get("", response_model=MetricSummary)
async def read_metrics(
    _: ProducerDep,
    session: SessionDep,
    name: Annotated[str, Query(min_length=1, max_length=255, pattern=_NO_CONTROL)],
    since: Annotated[
        IsoDatetime | None, Query(description="default: an hour before until; not after until")
    ] = None,
    until: Annotated[IsoDatetime | None, Query(description="default: now")] = None,
    task_id: Annotated[str | None, Query(max_length=255, pattern=_NO_CONTROL)] = None,
    label: Annotated[
        list[Annotated[str, StringConstraints(pattern=_LABEL)]] | None,
        Query(description="key:value, e.g. channel:email; repeatable"),
    ] = None,
    aggregation_type: Annotated[str | None, Query(max_length=20, pattern=_NO_CONTROL)] = None,
    points: Annotated[int, Query(ge=0, le=1000, description="newest points to list")] = 100,
) -> MetricSummary:
    """avg / p95 / max / min of ``name`` between ``since`` (default: an hour ago) and ``until``
    (default: now), optionally for one task, some labels, or one stored aggregation type."""
    end = until or utcnow()
    start = since or end - timedelta(hours=1)
    if start > end:
        raise Unprocessable("since must not be later than until")
    rows = await metric_window(
        session,
        name,
        since=start,
        until=end,
        task_id=task_id,
        aggregation_type=aggregation_type,
        labels=_parse_labels(label or []),
    )
    values = sorted(r.value for r in rows)
    return MetricSummary(
        name=name,
        unit=rows[0].unit if rows else None,
        since=start,
        until=end,
        count=len(values),
        avg=sum(values) / len(values) if values else None,
        p95=_percentile(values, 0.95) if values else None,
        max=values[-1] if values else None,
        min=values[0] if values else None,
        points=[
            MetricPoint(
                timestamp=r.timestamp,
                value=r.value,
                labels=r.labels or {},
                aggregation_type=r.aggregation_type,
            )
            for r in rows[:points]
        ],
    )


def _parse_labels(pairs: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise Unprocessable(f"label must look like key:value, got {pair!r}")
        parsed[key] = value
    return parsed
