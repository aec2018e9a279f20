"""A task's ONE ``progress`` notification (docs/architecture.md, "Triggers"): no pile of
"in progress" items.

- The task's first progress report creates it, and its channel (websocket) is sent once, by the
  workers, like any notification's.
- Every later report or status change rewrites it in place (message, metadata, ``updated_at``);
  it keeps its ``created_at``, so it stays where it was in the inbox. Those changes reach open
  sockets as ``task_progress`` frames only, never as a second send.
- It is marked read when the task ends (completed, failed, cancelled), and unread again when a
  failed or cancelled task restarts.

What it says is decided here; "one per task" is the database's to enforce
(``storage.tasks.save_progress_notification``: the row's ``dedupe_key`` is
``progress:<sha256 of the task id>``, a unique index).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.notification import Channel, Notification
from notifier.models.task import TaskProgress
from notifier.storage.tasks import save_progress_notification
from notifier.triggers.rules import task_key


def progress_dedupe_key(task_id: str) -> str:
    return f"progress:{task_key(task_id)}"


def _title(task: TaskProgress) -> str:
    return f"{task.task_type} progress"


def _message(task: TaskProgress) -> str:
    where = f"{task.task_type} {task.task_id}"
    if task.is_finished:
        return f"{where}: {task.status}"
    step = f" — {task.current_step}" if task.current_step else ""
    paused = " (paused)" if task.is_paused else ""
    return f"{where}: {task.progress_percentage:.0f}%{paused}{step}"


def _metadata(task: TaskProgress) -> dict[str, object]:
    return {"task_id": task.task_id, "progress": task.progress_percentage, "status": task.status}


def new_progress_notification(
    task: TaskProgress, *, progress_reported: bool, now: datetime
) -> Notification | None:
    """The progress notification a report creates, or None: a task that ends without ever
    reporting progress has nothing to show."""
    if task.is_finished or not progress_reported:
        return None
    return Notification.create_progress_notification(
        task.user_id,
        task.task_id,
        task.progress_percentage,
        title=_title(task),
        channels=(Channel.WEBSOCKET,),
        metadata=_metadata(task),
        dedupe_key=progress_dedupe_key(task.task_id),
        now=now,
    ).with_message(_message(task))


def refresh_progress_notification(
    row: Notification, task: TaskProgress, *, restarted: bool, now: datetime
) -> None:
    """Rewrite the stored progress notification to say where ``task`` is now."""
    row.title = _title(task)
    row.message = _message(task)
    row.notification_metadata = _metadata(task)
    row.updated_at = now
    if task.is_finished:
        row.mark_read(now)
    elif restarted:
        row.is_read, row.read_at = False, None


async def track_progress(
    session: AsyncSession,
    task: TaskProgress,
    *,
    progress_reported: bool,
    restarted: bool,
    now: datetime,
) -> Notification | None:
    """Bring the task's progress notification up to date with ``task`` (already updated).

    Creates it on the first progress report of an unfinished task; returns it then (the caller
    wakes the workers), else None."""
    return await save_progress_notification(
        session,
        progress_dedupe_key(task.task_id),
        create=lambda: new_progress_notification(
            task, progress_reported=progress_reported, now=now
        ),
        refresh=lambda row: refresh_progress_notification(row, task, restarted=restarted, now=now),
    )
