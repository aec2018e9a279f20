"""Stored metrics (``ProgressMetric`` rows): the recorder's batched insert, and the window that
``GET /v1/metrics`` aggregates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.models.metric import ProgressMetric

# The most rows one window reads: a bound on what a single request may pull into memory.
MAX_WINDOW_ROWS = 100_000


async def insert_metrics(
    sessions: async_sessionmaker[AsyncSession], metrics: Sequence[ProgressMetric]
) -> None:
    """Insert ``metrics`` in one statement and one transaction of their own."""
    rows = [
        {
            "id": m.id,
            "metric_name": m.metric_name,
            "value": m.value,
            "unit": m.unit,
            "labels": m.labels,
            "dimensions": m.dimensions,
            "timestamp": m.timestamp,
            "collection_time": m.collection_time,
            "is_aggregated": m.is_aggregated,
            "aggregation_type": m.aggregation_type,
            "related_task_id": m.related_task_id,
            "related_user_id": m.related_user_id,
            "metric_metadata": m.metric_metadata,
        }
        for m in metrics
    ]
    async with sessions() as session, session.begin():
        await session.execute(insert(ProgressMetric), rows)


async def metric_window(
    session: AsyncSession,
    name: str,
    *,
    since: datetime,
    until: datetime,
    task_id: str | None = None,
    aggregation_type: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[ProgressMetric]:
    """The rows of metric ``name`` between ``since`` and ``until``, newest first (at most
    ``MAX_WINDOW_ROWS``), optionally for one task, one stored aggregation type, and rows whose
    labels hold every ``labels`` pair (compared as text)."""
    query = select(ProgressMetric).where(
        ProgressMetric.metric_name == name,
        ProgressMetric.timestamp >= since,
        ProgressMetric.timestamp <= until,
    )
    if task_id is not None:
        query = query.where(ProgressMetric.related_task_id == task_id)
    if aggregation_type is not None:
        query = query.where(ProgressMetric.aggregation_type == aggregation_type)
    query = query.order_by(ProgressMetric.timestamp.desc()).limit(MAX_WINDOW_ROWS)
    wanted = labels or {}
    return [
        row
        for row in (await session.execute(query)).scalars()
        if all(str((row.labels or {}).get(k)) == v for k, v in wanted.items())
    ]
