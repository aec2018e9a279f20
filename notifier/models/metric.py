"""ProgressMetric: a measurement the service records about itself and the tasks it follows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base, iso, utcnow

# Conversions to the unit each family is stored in; see ``ProgressMetric.value_in``.
_UNIT_SCALE = {"ms": 0.001, "seconds": 1.0, "s": 1.0, "minutes": 60.0}


class ProgressMetric(Base):
    __tablename__ = "progress_metrics"
    __table_args__ = (
        Index("idx_progress_metrics_name", "metric_name"),
        Index("idx_progress_metrics_timestamp", "timestamp"),
        Index("idx_progress_metrics_related_task_id", "related_task_id"),
        Index("idx_progress_metrics_name_timestamp", "metric_name", "timestamp"),
        Index("idx_progress_metrics_task_timestamp", "related_task_id", "timestamp"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    metric_name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(50), default="count")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dimensions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)
    collection_time: Mapped[datetime] = mapped_column(default=utcnow)
    is_aggregated: Mapped[bool] = mapped_column(Boolean, default=False)
    aggregation_type: Mapped[str | None] = mapped_column(String(20))
    related_task_id: Mapped[str | None] = mapped_column(String(255))
    related_user_id: Mapped[str | None] = mapped_column(String(255))
    metric_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)

    def add_label(self, key: str, value: str) -> None:
        self.labels = {**(self.labels or {}), key: value}

    def value_in(self, unit: str) -> float:
        """Convert a duration metric to another time unit (``ms``, ``seconds``, ``minutes``)."""
        if self.unit not in _UNIT_SCALE or unit not in _UNIT_SCALE:
            raise ValueError(f"cannot convert {self.unit!r} to {unit!r}")
        return self.value * _UNIT_SCALE[self.unit] / _UNIT_SCALE[unit]

    @classmethod
    def create(
        cls,
        metric_name: str,
        value: float,
        unit: str,
        *,
        labels: dict[str, Any] | None = None,
        dimensions: dict[str, Any] | None = None,
        related_task_id: str | None = None,
        related_user_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> ProgressMetric:
        now = utcnow()
        return cls(
            id=uuid.uuid4(),
            metric_name=metric_name,
            value=float(value),
            unit=unit,
            labels=labels or {},
            dimensions=dimensions or {},
            timestamp=timestamp or now,
            collection_time=now,
            is_aggregated=False,
            related_task_id=related_task_id,
            related_user_id=related_user_id,
            metric_metadata={},
        )

    @classmethod
    def create_response_time_metric(
        cls, name: str, milliseconds: float, **fields: Any
    ) -> ProgressMetric:
        return cls.create(name, milliseconds, "ms", **fields)

    @classmethod
    def create_throughput_metric(
        cls, name: str, per_second: float, **fields: Any
    ) -> ProgressMetric:
        return cls.create(name, per_second, "per_second", **fields)

    @classmethod
    def create_percentage_metric(cls, name: str, percent: float, **fields: Any) -> ProgressMetric:
        if not 0.0 <= percent <= 100.0:
            raise ValueError("a percentage lies between 0 and 100")
        return cls.create(name, percent, "percent", **fields)

    @classmethod
    def create_websocket_connection_metric(cls, connections: int, **fields: Any) -> ProgressMetric:
        return cls.create("websocket_connections", connections, "count", **fields)

    @classmethod
    def create_task_progress_metric(
        cls, task_id: str, progress: float, **fields: Any
    ) -> ProgressMetric:
        return cls.create("task_progress", progress, "percent", related_task_id=task_id, **fields)

    @classmethod
    def create_error_rate_metric(
        cls, name: str, errors: int, total: int, **fields: Any
    ) -> ProgressMetric:
        rate = 100.0 * errors / total if total else 0.0
        return cls.create(name, rate, "percent", **fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "metric_name": self.metric_name,
            "value": self.value,
            "unit": self.unit,
            "labels": self.labels,
            "dimensions": self.dimensions,
            "timestamp": iso(self.timestamp),
            "collection_time": iso(self.collection_time),
            "is_aggregated": self.is_aggregated,
            "aggregation_type": self.aggregation_type,
            "related_task_id": self.related_task_id,
            "related_user_id": self.related_user_id,
        }
