"""Escalation steps and the cancellation key: the writes that stop what is not yet sent
(docs/architecture.md, "Digest, throttle and escalation").

An escalation step's channels are delivery rows from enqueue, ``pending`` and due at the
step's time. The moment the step's condition holds (``seen``: an ack, a seen mark or a read;
``read``: a read), the steps still waiting become ``skipped`` in the same transaction as the
mark, under the notification's row lock that every channel writer holds: a step can never go
out after the user saw the notification.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.notification import AWAITING_SEND, Notification
from notifier.storage.transitions import (
    TransitionRecord,
    Wakeups,
    advance_channel,
    record_in_session,
    summarize_notification,
)

Mark = Literal["seen", "read"]
MAX_SEEN_IDS = 100  # one request's ids: bounded, as every list a user sends


def _step_conditions(notification: Notification) -> dict[str, str]:
    """channel -> the step's ``unless`` (``seen`` or ``read``), for the steps of the row."""
    plan = notification.delivery_plan or {}
    return {
        channel: step.get("unless", "seen")
        for step in plan.get("escalation") or ()
        for channel in step["channels"]
    }


def skip_waiting_steps(
    notification: Notification, mark: Mark, now: datetime, records: list[TransitionRecord]
) -> int:
    """Skip the waiting step channels of a (locked) notification whose condition ``mark``
    satisfies (a read satisfies both); the number skipped. The caller summarizes and records."""
    conditions = _step_conditions(notification)
    if not conditions:
        return 0
    count = 0
    for delivery in notification.deliveries:
        unless = conditions.get(delivery.channel)
        if unless is None or delivery.status not in AWAITING_SEND:
            continue
        if unless == "read" and mark != "read":
            continue
        change = ChannelChange(ChannelEvent.SKIPPED, last_error=f"{unless} before escalation")
        if advance_channel(notification, delivery, change, now, records).applied:
            count += 1
    return count


def _settle(notification: Notification, now: datetime, records: list[TransitionRecord]) -> None:
    summarize_notification(notification, now, records, leased=False)
    if notification.is_settled:
        notification.next_attempt_at = None


async def mark_steps(
    session: AsyncSession,
    notifications: Sequence[Notification],
    mark: Mark,
    now: datetime,
    wakeups: Wakeups | None,
) -> int:
    """Skip the waiting steps of (locked) ``notifications`` for ``mark``, recording the
    transitions in the session's transaction; the number of channels skipped."""
    records: list[TransitionRecord] = []
    total = 0
    for notification in notifications:
        count = skip_waiting_steps(notification, mark, now, records)
        if count:
            _settle(notification, now, records)
            total += count
    if records:
        await record_in_session(session, records, wakeups)
    return total


async def lock_with_steps(
    session: AsyncSession, user_id: str | None, ids: Sequence[uuid.UUID]
) -> list[Notification]:
    """The notifications among ``ids`` (of ``user_id``, unless None) that have a delivery
    plan, locked in id order (as every batch writer locks, so two never wait in a cycle)."""
    if not ids:
        return []
    query = (
        select(Notification)
        .where(
            Notification.id.in_(sorted(set(ids))),
            Notification.delivery_plan.is_not(None),
            *([Notification.user_id == user_id] if user_id is not None else []),
        )
        .order_by(Notification.id)
        .with_for_update()
        # Fresh from the database: a bulk read mark or an ack wrote these rows without the ORM.
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(query)).scalars())


async def mark_acked(
    session: AsyncSession,
    acked: Sequence[tuple[str, uuid.UUID]],
    now: datetime,
    wakeups: Wakeups | None,
) -> int:
    """Websocket acks (user id, notification id) that settled their channel: the waiting
    ``seen`` steps of those notifications skipped, in the ack's transaction."""
    # One query for the batch; the caller checked each ack's owner.
    rows = await lock_with_steps(session, None, [ident for _, ident in acked])
    return await mark_steps(session, rows, "seen", now, wakeups)


async def mark_seen(
    session: AsyncSession,
    user_id: str,
    ids: Sequence[uuid.UUID],
    now: datetime,
    wakeups: Wakeups | None,
) -> int:
    """``POST /v1/users/{u}/notifications/seen``: the user's waiting ``seen`` steps of
    ``ids`` skipped; the number of channels skipped. The caller commits."""
    rows = await lock_with_steps(session, user_id, ids)
    return await mark_steps(session, rows, "seen", now, wakeups)


async def cancel_by_key(
    session: AsyncSession,
    user_id: str,
    cancellation_key: str,
    now: datetime,
    wakeups: Wakeups | None,
) -> tuple[int, int]:
    """Cancel every unsent channel of the user's notifications with ``cancellation_key``
    (waiting steps included); (notifications touched, channels cancelled). The caller
    commits."""
    query = (
        select(Notification)
        .where(
            Notification.user_id == user_id,
            Notification.cancellation_key == cancellation_key,
            Notification.next_attempt_at.is_not(None),  # settled rows have nothing to cancel
        )
        .order_by(Notification.id)
        .with_for_update()
    )
    rows = list((await session.execute(query)).scalars())
    records: list[TransitionRecord] = []
    touched = channels = 0
    for notification in rows:
        count = 0
        for delivery in notification.deliveries:
            change = ChannelChange(ChannelEvent.CANCELLED, last_error=delivery.last_error)
            if advance_channel(notification, delivery, change, now, records).applied:
                count += 1
        if count:
            _settle(notification, now, records)
            touched += 1
            channels += count
    if records:
        await record_in_session(session, records, wakeups)
    return touched, channels
