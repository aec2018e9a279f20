"""A fixed clock and a task built without a database, for the model tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from notifier.models import TaskProgress
from notifier.models.task import TaskStatus

NOW = datetime(2030, 5, 17, 12, 0, 0, tzinfo=UTC)


def task(**fields: object) -> TaskProgress:
    values: dict[str, object] = {
        "task_id": f"t-{uuid.uuid4().hex[:8]}",
        "user_id": "u-1",
        "task_type": "export",
        "progress": 0.0,
        "status": TaskStatus.PENDING.value,
        "created_at": NOW - timedelta(minutes=5),
        "updated_at": NOW - timedelta(minutes=5),
        "task_metadata": {},
        "tags": [],
    }
    values.update(fields)
    return TaskProgress(**values)
