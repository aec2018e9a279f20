"""TaskProgress: the live state of a task that a producer service reports on."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base, iso, utcnow


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    CANCELLED = "cancelled"


TERMINAL_TASK_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class TaskProgress(Base):
    __tablename__ = "task_progress"
    __table_args__ = (
        Index("idx_task_progress_task_id", "task_id", unique=True),
        Index("idx_task_progress_user_id", "user_id"),
        Index("idx_task_progress_status", "status"),
        Index("idx_task_progress_user_status", "user_id", "status"),
        Index("idx_task_progress_type_status", "task_type", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    task_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    task_type: Mapped[str] = mapped_column(String(100))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(20), default=TaskStatus.PENDING)
    current_step: Mapped[str | None] = mapped_column(String(500))
    total_steps: Mapped[int | None] = mapped_column(Integer)
    estimated_duration: Mapped[int | None] = mapped_column(Integer)  # seconds
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    result: Mapped[dict[str, Any] | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[dict[str, Any] | None]
    task_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(default=list)

    # --- status checks -------------------------------------------------------------------
    @property
    def is_pending(self) -> bool:
        return self.status == TaskStatus.PENDING

    @property
    def is_running(self) -> bool:
        return self.status == TaskStatus.RUNNING

    @property
    def is_completed(self) -> bool:
        return self.status == TaskStatus.COMPLETED

    @property
    def is_failed(self) -> bool:
        return self.status == TaskStatus.FAILED

    @property
    def is_paused(self) -> bool:
        return self.status == TaskStatus.PAUSED

    @property
    def is_cancelled(self) -> bool:
        return self.status == TaskStatus.CANCELLED

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_TASK_STATUSES

    # --- derived figures -----------------------------------------------------------------
    @property
    def progress_percentage(self) -> float:
        return round(min(max(self.progress or 0.0, 0.0), 100.0), 2)

    def duration_seconds_at(self, now: datetime) -> float | None:
        if self.started_at is None:
            return None
        end = self.completed_at or now
        return max((end - self.started_at).total_seconds(), 0.0)

    @property
    def duration_seconds(self) -> float | None:
        """Seconds since the task started, up to its completion if it finished."""
        return self.duration_seconds_at(utcnow())

    def estimated_remaining_seconds_at(self, now: datetime) -> float | None:
        if self.is_finished:
            return 0.0
        if self.started_at is None:
            return float(self.estimated_duration) if self.estimated_duration else None
        elapsed = self.duration_seconds_at(now) or 0.0
        progress = self.progress or 0.0
        if progress > 0:
            # Extrapolate from the observed rate; it beats a stale estimate once work has begun.
            return max(elapsed * (100.0 - progress) / progress, 0.0)
        if self.estimated_duration:
            return max(float(self.estimated_duration) - elapsed, 0.0)
        return None

    @property
    def estimated_remaining_seconds(self) -> float | None:
        return self.estimated_remaining_seconds_at(utcnow())

    def update_progress(
        self,
        progress: float,
        *,
        current_step: str | None = None,
        status: TaskStatus | None = None,
        now: datetime | None = None,
    ) -> None:
        """Move the task forward; the first progress report starts a pending task."""
        if not 0.0 <= progress <= 100.0:
            raise ValueError("progress must be between 0 and 100")
        now = now or utcnow()
        self.progress = progress
        if current_step is not None:
            self.current_step = current_step
        if status is not None:
            self.status = status
        elif self.status == TaskStatus.PENDING:
            self.status = TaskStatus.RUNNING
        if self.status == TaskStatus.RUNNING and self.started_at is None:
            self.started_at = now
        if self.status in TERMINAL_TASK_STATUSES and self.completed_at is None:
            self.completed_at = now
        self.updated_at = now

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "task_id": self.task_id,
            "user_id": self.user_id,
            "task_type": self.task_type,
            "progress": self.progress,
            "progress_percentage": self.progress_percentage,
            "status": self.status,
            "current_step": self.current_step,
            "total_steps": self.total_steps,
            "estimated_duration": self.estimated_duration,
            "estimated_remaining_seconds": self.estimated_remaining_seconds,
            "duration_seconds": self.duration_seconds,
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "result": self.result,
            "error_message": self.error_message,
            "error_details": self.error_details,
            "task_metadata": self.task_metadata,
            "tags": self.tags,
        }
