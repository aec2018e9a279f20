"""The WebSocket frames of docs/architecture.md, "WebSocket", and the references that stand for them
where a whole frame does not fit (a NOTIFY payload is capped at 8000 bytes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from notifier.models.notification import Notification
from notifier.models.shape import frame_dict
from notifier.models.task import TaskProgress


def compact_json(message: dict[str, Any]) -> str:
    """``message`` (a frame, or a broker's message carrying one) as compact JSON, by orjson: a
    tenth of json's CPU, which the websocket fast path pays per notification at enqueue
    (bench/RESULTS.md, "Cheaper fast path A/B"). Non-ASCII characters are written as they are
    (UTF-8), not escaped; any JSON reader reads the same value."""
    try:
        return orjson.dumps(message).decode()
    except orjson.JSONEncodeError:  # what only json encodes: an integer beyond 64 bits
        return json.dumps(message, separators=(",", ":"))


def notification_frame(notification: dict[str, Any]) -> dict[str, Any]:
    return {"type": "notification", "notification": notification}


def notification_frame_for(row: Notification) -> dict[str, Any]:
    """The frame of a stored row: the same object the worker published live for it
    (``models/shape.py`` FRAME_FIELDS), so a replayed frame is the live one again."""
    return notification_frame(frame_dict(row))


def task_progress_frame(task: TaskProgress) -> dict[str, Any]:
    return {"type": "task_progress", "task": task.to_dict()}


@dataclass(frozen=True, slots=True)
class FrameReference:
    """A frame by the row it was made from: the receiver reads the row and rebuilds the frame.

    ``key`` is the notification's id or the task's ``task_id``. A task frame also names the
    version it stands for (``updated_at``): the row read back may be newer, and then the newer
    update's own frame follows, so this one is dropped rather than sent out of order."""

    kind: Literal["notification", "task"]
    key: str
    updated_at: str | None = None

    def to_message(self, user_id: str) -> dict[str, str]:
        if self.kind == "notification":
            return {"user_id": user_id, "notification_id": self.key}
        return {"user_id": user_id, "task_id": self.key, "updated_at": self.updated_at or ""}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> FrameReference | None:
        if isinstance(message.get("notification_id"), str):
            return cls("notification", message["notification_id"])
        if isinstance(message.get("task_id"), str):
            return cls("task", message["task_id"], message.get("updated_at") or None)
        return None

    def superseded_by(self, task: dict[str, Any]) -> bool:
        """Whether ``task`` (as read back) is a later version than the one referenced."""
        if self.updated_at is None or not task.get("updated_at"):
            return False
        return datetime.fromisoformat(task["updated_at"]) > datetime.fromisoformat(self.updated_at)


def reference_to(frame: dict[str, Any]) -> FrameReference | None:
    """The reference that can stand for ``frame``; None for a frame not made from a row."""
    notification, task = frame.get("notification"), frame.get("task")
    if frame.get("type") == "notification" and isinstance(notification, dict):
        return FrameReference("notification", str(notification["id"]))
    if frame.get("type") == "task_progress" and isinstance(task, dict):
        return FrameReference("task", str(task["task_id"]), task.get("updated_at"))
    return None
