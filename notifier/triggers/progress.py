"""Coalescing of ``progress`` notifications, so a task reporting 1000 times a second floods
neither its user nor the notifications table.

Rule: a task has at most one progress notification per ``progress_notify_interval_seconds``,
and the last report always wins. A report either
- rewrites the task's progress notification that is still waiting to go out (not yet claimed by
  a worker) with the newest figures, or
- creates a new one, scheduled no earlier than the interval after the previous one.
So the user sees at most one per interval, and the latest progress is what arrives. The caller
holds the task row's lock (``SELECT … FOR UPDATE``), which serialises reports of one task.
Live ``task_progress`` frames are separate and go out on every report.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.notification import (
    Channel,
    ChannelStatus,
    Notification,
    NotificationType,
)
from notifier.models.task import TaskProgress
from notifier.settings import Settings


def _progress_text(task: TaskProgress) -> str:
    step = f" — {task.current_step}" if task.current_step else ""
    return f"{task.task_type} {task.task_id}: {task.progress_percentage:.0f}%{step}"


async def coalesce_progress_notification(
    session: AsyncSession, task: TaskProgress, settings: Settings, now: datetime
) -> Notification | None:
    """Returns a new notification to add, or None if an existing one was updated."""
    latest = (
        await session.execute(
            select(Notification)
            .where(
                Notification.related_task_id == task.task_id,
                Notification.notification_type == NotificationType.PROGRESS.value,
            )
            .order_by(Notification.created_at.desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    metadata = {"task_id": task.task_id, "progress": task.progress_percentage}
    if latest is not None and latest.lease_owner is None and _still_waiting(latest):
        latest.message = _progress_text(task)
        latest.notification_metadata = metadata
        latest.updated_at = now
        return None
    interval = timedelta(seconds=settings.progress_notify_interval_seconds)
    send_at = max(now, (latest.send_at or latest.created_at) + interval) if latest else now
    return Notification.create_progress_notification(
        task.user_id,
        task.task_id,
        task.progress_percentage,
        title=f"{task.task_type} in progress",
        channels=(Channel.WEBSOCKET,),
        metadata=metadata,
        send_at=send_at if send_at > now else None,
        now=now,
    ).with_message(_progress_text(task))


def _still_waiting(notification: Notification) -> bool:
    return all(d.status == ChannelStatus.PENDING for d in notification.deliveries)
