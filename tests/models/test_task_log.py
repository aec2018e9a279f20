"""``TaskLog``'s factories, one per level, and what they keep."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from notifier.models import TaskLog
from notifier.models.log import LogLevel


@pytest.mark.parametrize(
    ("factory", "level"),
    [
        (TaskLog.create_debug_log, LogLevel.DEBUG),
        (TaskLog.create_info_log, LogLevel.INFO),
        (TaskLog.create_warning_log, LogLevel.WARNING),
        (TaskLog.create_error_log, LogLevel.ERROR),
        (TaskLog.create_critical_log, LogLevel.CRITICAL),
    ],
)
def test_log_factories(factory: object, level: LogLevel) -> None:
    before = datetime.now(UTC)
    log = factory("t-1", "something happened")  # type: ignore[operator]
    assert isinstance(log, TaskLog)
    assert log.task_id == "t-1" and log.message == "something happened"
    assert log.level == level
    assert isinstance(log.id, uuid.UUID)
    assert before <= log.timestamp <= datetime.now(UTC)
    assert log.context == {} and log.attachments == [] and log.stack_trace is None
    assert log.is_error is (level in (LogLevel.ERROR, LogLevel.CRITICAL))
    assert log.is_critical is (level == LogLevel.CRITICAL)
    assert log.is_warning_or_above is (
        level in (LogLevel.WARNING, LogLevel.ERROR, LogLevel.CRITICAL)
    )


def test_log_factory_keeps_context_and_stack_trace() -> None:
    log = TaskLog.create_error_log(
        "t-1",
        "boom",
        source="loader",
        context={"row": 7},
        stack_trace="Traceback (most recent call last): ...",
        attachments=[{"name": "dump.txt"}],
    )
    data = log.to_dict()
    assert data["level"] == "ERROR"
    assert data["source"] == "loader"
    assert data["context"] == {"row": 7}
    assert data["stack_trace"].startswith("Traceback")
    assert data["attachments"] == [{"name": "dump.txt"}]
    assert data["id"] == str(log.id)
