"""The live ``task_progress`` frame of a task report, cut down until it fits one PostgreSQL
NOTIFY (under 8000 bytes; ``notifier.realtime.fanout`` refuses a larger frame).

The whole task can be far larger: 16 KiB of ``task_metadata``, a ``result``, 50 tags, a
10,000-character ``error_message``. Such a frame used to fail the PATCH with a 500 on
PostgreSQL. The frame is the task as ``GET /v1/tasks/{id}`` shows it when that fits; else the
fields the inbox page draws a progress bar from (``error_message`` shortened); else the bare
progress. Whatever was left out stays readable with ``GET /v1/tasks/{id}``.
"""

from __future__ import annotations

import json
from typing import Any

from notifier.models.task import TaskProgress
from notifier.realtime.fanout import MAX_NOTIFY_PAYLOAD
from notifier.realtime.frames import task_progress_frame

_INBOX_FIELDS = (
    "id",
    "task_id",
    "user_id",
    "task_type",
    "status",
    "progress",
    "progress_percentage",
    "current_step",
    "total_steps",
    "estimated_remaining_seconds",
    "duration_seconds",
    "started_at",
    "completed_at",
    "updated_at",
    "error_message",
)
# Always fits: two ids of at most 255 characters, each at most 12 bytes escaped (an astral
# character is two \\uXXXX escapes), are 6120 bytes, and the rest is under 300.
_BARE_FIELDS = ("task_id", "status", "progress", "progress_percentage", "updated_at")
_ERROR_MESSAGE_CHARS = 500


def _fits(user_id: str, frame: dict[str, Any]) -> bool:
    # Measured as the fan-out encodes it: the frame wrapped with the user id, compact JSON.
    payload = json.dumps({"user_id": user_id, "frame": frame}, separators=(",", ":"))
    return len(payload.encode()) <= MAX_NOTIFY_PAYLOAD


def live_task_frame(task: TaskProgress) -> dict[str, Any]:
    frame = task_progress_frame(task)
    if _fits(task.user_id, frame):
        return frame
    whole: dict[str, Any] = frame["task"]
    inbox = {name: whole[name] for name in _INBOX_FIELDS}
    if inbox["error_message"]:
        inbox["error_message"] = inbox["error_message"][:_ERROR_MESSAGE_CHARS]
    slim = {"type": frame["type"], "task": inbox}
    if _fits(task.user_id, slim):
        return slim
    return {"type": frame["type"], "task": {name: whole[name] for name in _BARE_FIELDS}}
