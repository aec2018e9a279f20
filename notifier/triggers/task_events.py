"""Apply a producer's task update or log to the stored task, and say which notifications it
triggers, and the webhook event of a task that ended. Pure functions over the ORM objects; the
caller writes everything in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from notifier.models.log import TaskLog
from notifier.models.notification import Notification
from notifier.models.task import TERMINAL_TASK_STATUSES, TaskProgress, TaskStatus
from notifier.schemas.task import TaskUpdate
from notifier.settings import Settings
from notifier.triggers.rules import notifications_for_log, notifications_for_transition
from notifier.triggers.task_states import check_transition, is_restart
from notifier.webhooks.events import WebhookEvent, task_ended


def apply_task_update(
    task: TaskProgress, update: TaskUpdate, settings: Settings, now: datetime
) -> list[Notification]:
    """Mutate ``task`` by ``update``; raises ``IllegalTransition`` before changing anything."""
    current = TaskStatus(task.status)
    requested = update.status
    transition = requested is not None and check_transition(current, requested)
    restart = transition and requested is not None and is_restart(current, requested)
    if restart:
        _reset_for_restart(task, now)
    _copy_reported_fields(task, update)
    # A finished task's progress stands, unless this very report restarts it.
    if update.progress is not None and (restart or not task.is_finished):
        # Reports can arrive out of order; progress only moves forward within a run.
        task.progress = max(task.progress or 0.0, update.progress)
        if requested is None and current == TaskStatus.PENDING:
            requested, transition = TaskStatus.RUNNING, True
    task.updated_at = now
    if not transition or requested is None:
        return []
    _enter_status(task, requested, now)
    return notifications_for_transition(task, requested, settings)


def _reset_for_restart(task: TaskProgress, now: datetime) -> None:
    task.progress = 0.0
    task.started_at = now
    task.completed_at = None
    task.error_message = None
    task.error_details = None
    task.result = None


def _copy_reported_fields(task: TaskProgress, update: TaskUpdate) -> None:
    if update.current_step is not None:
        task.current_step = update.current_step
    if update.result is not None:
        task.result = update.result
    if update.error_message is not None:
        task.error_message = update.error_message
    if update.error_details is not None:
        task.error_details = update.error_details


def _enter_status(task: TaskProgress, status: TaskStatus, now: datetime) -> None:
    task.status = status.value
    if task.started_at is None and status in (TaskStatus.RUNNING, *TERMINAL_TASK_STATUSES):
        task.started_at = now
    if status in TERMINAL_TASK_STATUSES:
        task.completed_at = now
    if status == TaskStatus.COMPLETED:
        task.progress = 100.0


def notifications_for_new_log(
    task: TaskProgress, log: TaskLog, settings: Settings
) -> list[Notification]:
    return notifications_for_log(task, log, settings)


# The task statuses a producer's webhook hears about (docs/architecture.md, "Triggers").
_ENDED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})


def task_end_event(
    before: str, task: TaskProgress, body: dict[str, Any], now: datetime
) -> WebhookEvent | None:
    """``task.completed`` / ``task.failed`` when this update made the task enter that status
    (a repeated report of it is no new event); ``body`` is the task as GET /v1/tasks/{id}
    shows it. The caller writes it to the outbox in the update's transaction."""
    if task.status == before or task.status not in _ENDED:
        return None
    return task_ended(task.status, body, at=now)
