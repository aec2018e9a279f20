"""Queries on tasks and their logs, and the writes a task report makes: the task, its log
line, the notifications its triggers made, and its one progress notification."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.log import LEVEL_RANK, LogLevel, TaskLog
from notifier.models.notification import Notification
from notifier.models.task import TaskProgress, TaskStatus
from notifier.storage.cursors import decode_cursor, encode_cursor


async def get_task(
    session: AsyncSession, task_id: str, *, for_update: bool = False
) -> TaskProgress | None:
    query = select(TaskProgress).where(TaskProgress.task_id == task_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def create_task(session: AsyncSession, task: TaskProgress) -> TaskProgress:
    """Insert and commit ``task``; if its ``task_id`` is taken, the stored task instead: the
    same create arriving twice at once lets one insert win (the unique ``task_id``)."""
    session.add(task)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        stored = await get_task(session, task.task_id)
        if stored is None:
            raise
        return stored
    return task


def add_log(session: AsyncSession, log: TaskLog, triggered: Sequence[Notification]) -> None:
    """A log line and the notifications it triggered, written with the caller's commit."""
    session.add(log)
    session.add_all(triggered)


def add_notifications(session: AsyncSession, triggered: Sequence[Notification]) -> None:
    """Notifications a task update triggered, written with the caller's commit."""
    session.add_all(triggered)


async def save_progress_notification(
    session: AsyncSession,
    dedupe_key: str,
    *,
    create: Callable[[], Notification | None],
    refresh: Callable[[Notification], None],
) -> Notification | None:
    """Bring a task's one progress notification (``dedupe_key``) up to date, under its lock:
    ``refresh`` the stored row, or insert what ``create`` builds (None: nothing to insert).
    Returns the row it inserted, else None.

    One per task is the unique key's to enforce: should two first reports race, the loser's
    insert meets it, and the loser refreshes the winner's row instead."""
    row = await notification_by_dedupe_key(session, dedupe_key, for_update=True)
    if row is None:
        created = create()
        if created is None:
            return None
        if await insert_unless_duplicate(session, created):
            return created
        row = await notification_by_dedupe_key(session, dedupe_key, for_update=True)
        if row is None:
            raise RuntimeError(f"progress notification {dedupe_key} is neither inserted nor found")
    refresh(row)
    return None


async def notification_by_dedupe_key(
    session: AsyncSession, dedupe_key: str, *, for_update: bool = False
) -> Notification | None:
    query = select(Notification).where(Notification.dedupe_key == dedupe_key)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def insert_unless_duplicate(session: AsyncSession, notification: Notification) -> bool:
    """Insert ``notification`` now, in a savepoint; False (and nothing written) if a row holds
    its ``dedupe_key`` already. The rest of the caller's transaction goes on either way."""
    try:
        async with session.begin_nested():
            session.add(notification)
    except IntegrityError:
        return False
    return True


async def tasks_of_user(
    session: AsyncSession, user_id: str, *, status: TaskStatus | None, limit: int
) -> Sequence[TaskProgress]:
    query = select(TaskProgress).where(TaskProgress.user_id == user_id)
    if status is not None:
        query = query.where(TaskProgress.status == status.value)
    query = query.order_by(TaskProgress.updated_at.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def task_logs_page(
    session: AsyncSession,
    task_id: str,
    *,
    min_level: LogLevel | None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[TaskLog], str | None]:
    """Oldest first, like reading a log; ``min_level`` keeps that level and above."""
    conditions = [TaskLog.task_id == task_id]
    if min_level is not None:
        conditions.append(
            TaskLog.level.in_(
                [lvl.value for lvl in LogLevel if LEVEL_RANK[lvl] >= LEVEL_RANK[min_level]]
            )
        )
    if cursor is not None:
        timestamp, ident = decode_cursor(cursor)
        conditions.append(tuple_(TaskLog.timestamp, TaskLog.id) > tuple_(timestamp, ident))
    query = (
        select(TaskLog).where(*conditions).order_by(TaskLog.timestamp, TaskLog.id).limit(limit + 1)
    )
    rows = list((await session.execute(query)).scalars())
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].timestamp, rows[-1].id)
    return rows, None
