"""The WebSocket frames of DESIGN's "WebSocket" section."""

from __future__ import annotations

from typing import Any

from notifier.models.notification import Notification
from notifier.models.task import TaskProgress


def notification_frame(notification: dict[str, Any]) -> dict[str, Any]:
    return {"type": "notification", "notification": notification}


def notification_frame_for(row: Notification) -> dict[str, Any]:
    return notification_frame(row.to_dict())


def task_progress_frame(task: TaskProgress) -> dict[str, Any]:
    return {"type": "task_progress", "task": task.to_dict()}
