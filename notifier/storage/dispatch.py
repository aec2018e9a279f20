"""The queries of dispatch: claim, load, record an outcome, renew and release leases.

Every writer of a notification's delivery rows (a worker recording an outcome, a WebSocket ack,
a Twilio callback, a retry or cancel request) first locks the notification row with
``SELECT … FOR UPDATE`` (on SQLite, ``BEGIN IMMEDIATE`` plays that part: see ``db.py``). The
per-notification lock makes each read-modify-write of the channels and the derived status atomic.

A worker's writes are also guarded by its lease: it updates a notification only while
``lease_owner`` is still its id. Once its lease expired and another worker claimed the row, its
late writes are refused, so it cannot overwrite newer state.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import joinedload

from notifier.models.base import utcnow
from notifier.models.notification import (
    AWAITING_SEND,
    SETTLED,
    SUCCEEDED,
    ChannelStatus,
    Notification,
    NotificationDelivery,
    NotificationStatus,
    derive_status,
)
from notifier.models.recipient import PushSubscription, Recipient


async def claim_due(
    session: AsyncSession, *, worker_id: str, batch_size: int, lease_seconds: float
) -> list[uuid.UUID]:
    """Lease up to ``batch_size`` due notifications to this worker, most urgent first.

    Rendered on PostgreSQL as::

        WITH due AS (SELECT id FROM notifications
                     WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= :now
                     ORDER BY priority_rank, next_attempt_at
                     LIMIT :batch
                     FOR UPDATE SKIP LOCKED)
        UPDATE notifications SET lease_owner = :worker, lease_expires_at = :until,
               next_attempt_at = :until, status = CASE … END
        FROM due WHERE notifications.id = due.id
        RETURNING notifications.id

    ``SKIP LOCKED`` lets concurrent workers take disjoint rows without waiting on one another.
    The locking SELECT sits in a CTE (which PostgreSQL evaluates exactly once) rather than in
    ``WHERE id IN (subquery)``, which the planner may re-run and so lock more than ``LIMIT``.
    A claimed row's ``next_attempt_at`` becomes its lease expiry: should this worker die, the
    row is due again when the lease runs out and another worker claims it. Settled rows have a
    NULL ``next_attempt_at`` and sit outside the partial index this scans.
    """
    now = utcnow()
    until = now + timedelta(seconds=lease_seconds)
    due = (
        select(Notification.id)
        .where(Notification.next_attempt_at.is_not(None), Notification.next_attempt_at <= now)
        .order_by(Notification.priority_rank, Notification.next_attempt_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    claim = (
        update(Notification)
        .where(Notification.id == due.c.id)
        .values(
            lease_owner=worker_id,
            lease_expires_at=until,
            next_attempt_at=until,
            status=_dispatching_status(),
        )
        .returning(Notification.id)
        .execution_options(synchronize_session=False)
    )
    return list((await session.execute(claim)).scalars())


def _dispatching_status() -> ColumnElement[str]:
    return case(
        (
            Notification.status.in_(
                [NotificationStatus.PENDING.value, NotificationStatus.RETRYING.value]
            ),
            NotificationStatus.DISPATCHING.value,
        ),
        else_=Notification.status,
    )


async def next_due_at(session: AsyncSession) -> datetime | None:
    """When the earliest unsettled notification is due (for an idle worker's sleep)."""
    query = select(func.min(Notification.next_attempt_at)).where(
        Notification.next_attempt_at.is_not(None)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def queue_depth(session: AsyncSession) -> dict[str, int]:
    """Unsettled notifications by status (the partial index keeps this cheap)."""
    query = (
        select(Notification.status, func.count())
        .where(Notification.next_attempt_at.is_not(None))
        .group_by(Notification.status)
    )
    return {status: int(count) for status, count in (await session.execute(query)).all()}


@dataclass(frozen=True, slots=True)
class ClaimedWork:
    notification: Notification
    recipient: Recipient | None
    push_subscriptions: tuple[PushSubscription, ...]


async def load_claimed(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, worker_id: str
) -> list[ClaimedWork]:
    rows = (
        await session.execute(
            select(Notification).where(
                Notification.id.in_(ids), Notification.lease_owner == worker_id
            )
        )
    ).scalars()
    notifications = list(rows)
    users = {n.user_id for n in notifications}
    recipients = {
        r.user_id: r
        for r in (
            await session.execute(select(Recipient).where(Recipient.user_id.in_(users)))
        ).scalars()
    }
    wants_push = {n.user_id for n in notifications if "browser" in n.channels}
    subscriptions: dict[str, list[PushSubscription]] = {}
    if wants_push:
        query = select(PushSubscription).where(PushSubscription.user_id.in_(wants_push))
        for sub in (await session.execute(query)).scalars():
            subscriptions.setdefault(sub.user_id, []).append(sub)
    return [
        ClaimedWork(n, recipients.get(n.user_id), tuple(subscriptions.get(n.user_id, ())))
        for n in notifications
    ]


@dataclass(frozen=True, slots=True)
class ChannelChange:
    """What one attempt (or decision) did to one channel."""

    status: ChannelStatus
    attempts: int = 0  # tries made, added to the channel's count
    last_error: str | None = None
    provider_id: str | None = None
    next_attempt_at: datetime | None = None
    unknown_outcome: bool = False


def apply_change(delivery: NotificationDelivery, change: ChannelChange, now: datetime) -> None:
    """Write ``change`` onto ``delivery`` without ever moving it backwards: an ack that came
    first (``delivered``) outranks the worker's ``sent``, and a cancellation stands unless the
    message had already gone out."""
    delivery.attempts += change.attempts
    delivery.updated_at = now
    if change.unknown_outcome:
        delivery.unknown_outcomes += 1
    if change.provider_id is not None:
        delivery.provider_id = change.provider_id
    current = ChannelStatus(delivery.status)
    if current == ChannelStatus.DELIVERED:
        return
    if current in SETTLED and change.status not in (ChannelStatus.SENT, ChannelStatus.DELIVERED):
        return
    delivery.status = change.status.value
    delivery.last_error = change.last_error
    delivery.next_attempt_at = change.next_attempt_at if change.status in AWAITING_SEND else None


def refresh_summary(notification: Notification, now: datetime, *, leased: bool) -> None:
    """Recompute status and retry_count from the channels (DESIGN "Notification")."""
    states = [d.status for d in notification.deliveries]
    status = derive_status(states)
    if leased and status == NotificationStatus.PENDING:
        status = NotificationStatus.DISPATCHING
    notification.status = status.value
    notification.retry_count = sum(max(d.attempts - 1, 0) for d in notification.deliveries)
    notification.updated_at = now


async def _locked(
    session: AsyncSession, notification_id: uuid.UUID, worker_id: str | None
) -> Notification | None:
    # One statement for the row and its channels; only the notification row is locked (every
    # writer of the channels takes that lock first), which PostgreSQL allows with the join.
    query = (
        select(Notification)
        .where(Notification.id == notification_id)
        .options(joinedload(Notification.deliveries))
        .with_for_update(of=Notification)
    )
    if worker_id is not None:
        query = query.where(Notification.lease_owner == worker_id)
    return (await session.execute(query)).unique().scalar_one_or_none()


async def record_outcome(
    sessions: async_sessionmaker[AsyncSession],
    notification_id: uuid.UUID,
    channel: str,
    change: ChannelChange,
    *,
    worker_id: str,
    release: bool = False,
) -> bool:
    """Record one channel's outcome in its own short transaction, the moment it is known.
    With ``release`` (the last channel this worker had to send) the same transaction also gives
    the lease up, saving a round of statements per notification.
    Returns False (and writes nothing) if this worker no longer holds the lease, except for a
    success: a message that went out is recorded whoever holds the row now (``apply_change``
    never moves a channel backwards), so that the new holder does not send it a second time."""
    succeeded = change.status in SUCCEEDED
    async with sessions() as session, session.begin():
        notification = await _locked(session, notification_id, None if succeeded else worker_id)
        if notification is None:
            return False
        if release and notification.lease_owner == worker_id:
            notification.lease_owner = None
            notification.lease_expires_at = None
        leased = notification.lease_owner is not None
        now = utcnow()
        for delivery in notification.deliveries:
            if delivery.channel == channel:
                apply_change(delivery, change, now)
        refresh_summary(notification, now, leased=leased)
        if not leased:  # released meanwhile: due again only if other channels still wait
            notification.next_attempt_at = next_attempt_for(notification, now)
    return True


def next_attempt_for(notification: Notification, now: datetime) -> datetime | None:
    """When a worker must next look at this notification; None once nothing is left to send."""
    waiting = [d for d in notification.deliveries if d.status in AWAITING_SEND]
    if not waiting:
        return None
    due = min((d.next_attempt_at or now) for d in waiting)
    if notification.expires_at is not None:
        due = min(due, notification.expires_at)
    return due


async def release(
    sessions: async_sessionmaker[AsyncSession],
    notification_id: uuid.UUID,
    *,
    worker_id: str,
    immediately: bool = False,
) -> bool:
    """Give the lease up. The row is due again when its earliest waiting channel is (or now,
    with ``immediately``, for a worker that is shutting down mid-work)."""
    async with sessions() as session, session.begin():
        notification = await _locked(session, notification_id, worker_id)
        if notification is None:
            return False
        now = utcnow()
        notification.lease_owner = None
        notification.lease_expires_at = None
        notification.next_attempt_at = now if immediately else next_attempt_for(notification, now)
        if immediately and notification.is_settled:
            notification.next_attempt_at = None
        refresh_summary(notification, now, leased=False)
    return True


async def renew_leases(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, worker_id: str, lease_seconds: float
) -> int:
    """Extend the leases this worker still holds on ``ids`` (work still in flight)."""
    if not ids:
        return 0
    until = utcnow() + timedelta(seconds=lease_seconds)
    result = await session.execute(
        update(Notification)
        .where(Notification.id.in_(ids), Notification.lease_owner == worker_id)
        .values(lease_expires_at=until, next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def settle_channel_externally(
    session: AsyncSession,
    notification_id: uuid.UUID,
    channel: str,
    new_status: ChannelStatus,
    *,
    last_error: str | None = None,
    allowed_from: frozenset[ChannelStatus],
) -> bool:
    """A confirmation from outside the worker (WebSocket ack, provider callback) moves a
    channel forward. Returns False if the channel was not in ``allowed_from`` (a duplicate, or
    an out-of-order report that would move it backwards). The caller commits."""
    notification = await _locked(session, notification_id, None)
    if notification is None:
        return False
    delivery = next((d for d in notification.deliveries if d.channel == channel), None)
    if delivery is None or ChannelStatus(delivery.status) not in allowed_from:
        return False
    now = utcnow()
    delivery.status = new_status.value
    delivery.last_error = last_error
    delivery.next_attempt_at = None
    delivery.updated_at = now
    leased = notification.lease_owner is not None
    if not leased:
        notification.next_attempt_at = next_attempt_for(notification, now)
    refresh_summary(notification, now, leased=leased)
    return True
