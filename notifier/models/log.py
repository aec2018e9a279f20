"""TaskLog: one log line a producer reported for a task."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base, iso, utcnow


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


LEVEL_RANK = {level: rank for rank, level in enumerate(LogLevel)}


class TaskLog(Base):
    __tablename__ = "task_logs"
    __table_args__ = (
        Index("idx_task_logs_task_id", "task_id"),
        Index("idx_task_logs_level", "level"),
        Index("idx_task_logs_timestamp", "timestamp"),
        Index("idx_task_logs_task_timestamp", "task_id", "timestamp"),
        Index("idx_task_logs_level_timestamp", "level", "timestamp"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    task_id: Mapped[str] = mapped_column(String(255))
    level: Mapped[str] = mapped_column(String(10), default=LogLevel.INFO)
    message: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(255))
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stack_trace: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(default=list)

    @property
    def is_error(self) -> bool:
        return self.level in (LogLevel.ERROR, LogLevel.CRITICAL)

    @property
    def is_critical(self) -> bool:
        return self.level == LogLevel.CRITICAL

    @property
    def is_warning_or_above(self) -> bool:
        return LEVEL_RANK[LogLevel(self.level)] >= LEVEL_RANK[LogLevel.WARNING]

    @classmethod
    def create_log(
        cls,
        task_id: str,
        level: LogLevel,
        message: str,
        *,
        source: str | None = None,
        context: dict[str, Any] | None = None,
        stack_trace: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
    ) -> TaskLog:
        return cls(
            id=uuid.uuid4(),
            task_id=task_id,
            level=level,
            message=message,
            source=source,
            timestamp=utcnow(),
            context=context or {},
            stack_trace=stack_trace,
            attachments=attachments or [],
        )

    @classmethod
    def create_debug_log(cls, task_id: str, message: str, **fields: Any) -> TaskLog:
        return cls.create_log(task_id, LogLevel.DEBUG, message, **fields)

    @classmethod
    def create_info_log(cls, task_id: str, message: str, **fields: Any) -> TaskLog:
        return cls.create_log(task_id, LogLevel.INFO, message, **fields)

    @classmethod
    def create_warning_log(cls, task_id: str, message: str, **fields: Any) -> TaskLog:
        return cls.create_log(task_id, LogLevel.WARNING, message, **fields)

    @classmethod
    def create_error_log(cls, task_id: str, message: str, **fields: Any) -> TaskLog:
        return cls.create_log(task_id, LogLevel.ERROR, message, **fields)

    @classmethod
    def create_critical_log(cls, task_id: str, message: str, **fields: Any) -> TaskLog:
        return cls.create_log(task_id, LogLevel.CRITICAL, message, **fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "task_id": self.task_id,
            "level": self.level,
            "message": self.message,
            "source": self.source,
            "timestamp": iso(self.timestamp),
            "context": self.context,
            "stack_trace": self.stack_trace,
            "attachments": self.attachments,
        }
