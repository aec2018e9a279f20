"""The trigger rules: which task events notify whom, how, and on which channels.

- status → ``completed``: a ``success`` notification;
- status → ``failed``: an ``error`` notification, priority ``high``, carrying ``error_message``;
- a log at ``ERROR``: an ``error`` notification; at ``CRITICAL``: priority ``urgent``.
Channels come from settings (``notify_on_*``), overridden per task by
``task_metadata["notify"]["on_completed" | "on_failed" | "on_error_log" | "on_critical_log"]``.
The texts are the built-in templates' (``metadata.template.key``), rendered in the owner's
locale by texts.py; the English ones here are the fallback. Each notification carries a
``dedupe_key`` naming its event, so a trigger that fires twice for one event creates one row
(the unique index refuses the second).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from notifier.channels.registry import CHANNELS
from notifier.models.log import LogLevel, TaskLog
from notifier.models.notification import Notification, Priority
from notifier.models.task import TaskProgress, TaskStatus
from notifier.settings import Settings

TriggerEvent = Literal["on_completed", "on_failed", "on_error_log", "on_critical_log"]


def channels_for(event: TriggerEvent, task: TaskProgress, settings: Settings) -> list[str]:
    override = (task.task_metadata or {}).get("notify", {})
    if isinstance(override, dict) and isinstance(override.get(event), list):
        chosen = [c for c in override[event] if c in CHANNELS]
        return list(dict.fromkeys(chosen))
    defaults: dict[TriggerEvent, list[str]] = {
        "on_completed": settings.notify_on_completed,
        "on_failed": settings.notify_on_failed,
        "on_error_log": settings.notify_on_error_log,
        "on_critical_log": settings.notify_on_critical_log,
    }
    return list(defaults[event])


TASK_FAILURES_DIGEST_KEY = "task-failures"


def failed_plan_for(
    task: TaskProgress, channels: list[str], settings: Settings
) -> dict[str, Any] | None:
    """A failed task's plan: the task's own, with the default failure digest
    (``digest_task_failures_seconds``, ``leading``) unless the task set a digest."""
    plan = plan_for(task, channels) or {}
    if "digest" not in plan and settings.digest_task_failures_seconds > 0:
        plan["digest"] = {
            "key": TASK_FAILURES_DIGEST_KEY,
            "window_seconds": settings.digest_task_failures_seconds,
            "leading": True,
        }
    return plan or None


def plan_for(task: TaskProgress, channels: list[str]) -> dict[str, Any] | None:
    """``task_metadata["notify"]``'s ``digest``, ``throttle`` and ``escalation`` for this
    task's notifications (validated when the task was created: schemas/task.py); a step
    channel that this event already sends on is left out of the step (docs/architecture.md,
    "Digest, throttle and escalation")."""
    notify = (task.task_metadata or {}).get("notify")
    if not isinstance(notify, dict):
        return None
    plan: dict[str, Any] = {}
    if isinstance(notify.get("digest"), dict):
        plan["digest"] = notify["digest"]
    if isinstance(notify.get("throttle"), dict):
        plan["throttle"] = notify["throttle"]
    steps = []
    for step in notify.get("escalation") or ():
        rest = [c for c in step["channels"] if c not in channels]
        if rest:
            steps.append({**step, "channels": rest})
    if steps:
        plan["escalation"] = steps
    return plan or None


def task_key(task_id: str) -> str:
    """A task id as dedupe keys carry it: its SHA-256, so that a key fits its 255-character
    column whatever the id (which may itself be 255 characters long)."""
    return hashlib.sha256(task_id.encode()).hexdigest()


def _metadata(task: TaskProgress, template: str) -> dict[str, Any]:
    # The template that says it in the owner's language: texts.py renders it; the English
    # texts here are what is sent should that render fail.
    return {"task_id": task.task_id, "task_type": task.task_type, "template": {"key": template}}


def _run_marker(task: TaskProgress) -> str:
    # A restarted task may complete or fail again: each run notifies once.
    return task.started_at.isoformat() if task.started_at else "never-started"


def notifications_for_transition(
    task: TaskProgress, new_status: TaskStatus, settings: Settings
) -> list[Notification]:
    if new_status == TaskStatus.COMPLETED:
        channels = channels_for("on_completed", task, settings)
        if not channels:
            return []
        return [
            Notification.create_success_notification(
                task.user_id,
                f"{task.task_type} completed",
                f"Task {task.task_id} completed.",
                channels=channels,
                related_task_id=task.task_id,
                metadata=_metadata(task, "task.completed"),
                delivery_plan=plan_for(task, channels),
                dedupe_key=f"task:{task_key(task.task_id)}:completed:{_run_marker(task)}",
            )
        ]
    if new_status == TaskStatus.FAILED:
        channels = channels_for("on_failed", task, settings)
        if not channels:
            return []
        return [
            Notification.create_error_notification(
                task.user_id,
                f"{task.task_type} failed",
                task.error_message or f"Task {task.task_id} failed.",
                channels=channels,
                priority=Priority.HIGH,
                related_task_id=task.task_id,
                metadata=_metadata(task, "task.failed"),
                delivery_plan=failed_plan_for(task, channels, settings),
                dedupe_key=f"task:{task_key(task.task_id)}:failed:{_run_marker(task)}",
            )
        ]
    return []


def notifications_for_log(
    task: TaskProgress, log: TaskLog, settings: Settings
) -> list[Notification]:
    if log.level not in (LogLevel.ERROR, LogLevel.CRITICAL):
        return []
    critical = log.level == LogLevel.CRITICAL
    channels = channels_for("on_critical_log" if critical else "on_error_log", task, settings)
    if not channels:
        return []
    return [
        Notification.create_error_notification(
            task.user_id,
            f"{task.task_type}: {'critical' if critical else 'error'} log",
            log.message[:10_000],
            channels=channels,
            priority=Priority.URGENT if critical else Priority.HIGH,
            related_task_id=task.task_id,
            delivery_plan=plan_for(task, channels),
            metadata={
                "task_id": task.task_id,
                "log_id": str(log.id),
                "level": log.level,
                "template": {"key": "task.log.critical" if critical else "task.log.error"},
            },
            dedupe_key=f"log:{log.id}",
        )
    ]
