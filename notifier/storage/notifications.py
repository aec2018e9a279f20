"""Queries on notifications that the API runs: insert, fetch, inbox pages, read marks, and the
hand-made state changes (read, retry, cancel: through the state machine, their transitions
recorded in the same transaction). The dispatch queries live in ``dispatch.py``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    bindparam,
    false,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.base import utcnow
from notifier.models.notification import Notification, NotificationStatus
from notifier.models.unread import UserUnreadCount
from notifier.storage.cursors import decode_cursor, encode_cursor
from notifier.storage.escalation import lock_with_steps, mark_steps
from notifier.storage.transitions import (
    TransitionRecord,
    Wakeups,
    advance_channel,
    read_record,
    record_in_session,
    summarize_notification,
)

# The dedupe_key prefix of a digest notification (storage/digests.py): left out of the inbox.
DIGEST_KEY = "digest:"

# LISTEN/NOTIFY channel that wakes dispatch workers; the payload is empty, it only says "look".
DISPATCH_WAKEUP_CHANNEL = "notifier_dispatch"


async def get_notification(
    session: AsyncSession, notification_id: uuid.UUID, *, for_update: bool = False
) -> Notification | None:
    query = select(Notification).where(Notification.id == notification_id)
    if for_update:
        # Every writer of the channels holds this row's lock, so the channels that the
        # relationship loads next cannot move under us.
        return (await session.execute(query.with_for_update())).scalar_one_or_none()
    # One statement for the row and its channels: two would read two snapshots under READ
    # COMMITTED, and could pair a status from before an outcome with channels from after it.
    query = query.options(joinedload(Notification.deliveries))
    return (await session.execute(query)).unique().scalar_one_or_none()


def _visible_to_user(user_id: str, now: datetime) -> list[ColumnElement[bool]]:
    # Scheduled notifications appear in the inbox once they are due; cancelled ones never do.
    # The status is a literal, not a bound parameter, so that the planner can match the
    # partial index idx_notifications_user_unread even in a generic (prepared) plan.
    return [
        Notification.user_id == user_id,
        or_(Notification.send_at.is_(None), Notification.send_at <= now),
        Notification.status != literal_column(f"'{NotificationStatus.CANCELLED.value}'"),
    ]


# ``is_read = false``, which the partial index's predicate implies; ``IS false`` it does not.
_UNREAD = Notification.is_read == false()


@dataclass(frozen=True, slots=True)
class InboxSlice:
    items: Sequence[Notification]
    unread_count: int
    next_cursor: str | None


async def inbox_page(
    session: AsyncSession,
    user_id: str,
    *,
    unread_only: bool,
    limit: int,
    cursor: str | None,
) -> InboxSlice:
    """Newest first, keyset-paged on (created_at, id) so deep pages cost what the first does."""
    now = utcnow()
    conditions = _visible_to_user(user_id, now)
    # A digest is not listed: its members are (storage/digests.py names it ``digest:<id>``).
    conditions.append(
        or_(Notification.dedupe_key.is_(None), ~Notification.dedupe_key.startswith(DIGEST_KEY))
    )
    if unread_only:
        conditions.append(_UNREAD)
    rows, next_cursor = await newest_first(session, conditions, limit=limit, cursor=cursor)
    return InboxSlice(rows, await unread_count(session, user_id, now=now), next_cursor)


async def newest_first(
    session: AsyncSession,
    conditions: list[ColumnElement[bool]],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Notification], str | None]:
    """The notifications matching ``conditions``, newest first, keyset-paged on
    (created_at, id), and the cursor of the next page (None on the last). Raises
    ``InvalidCursor`` for a cursor this service did not issue."""
    if cursor is not None:
        created_at, ident = decode_cursor(cursor)
        conditions = [
            *conditions,
            tuple_(Notification.created_at, Notification.id) < tuple_(created_at, ident),
        ]
    query = (
        select(Notification)
        .where(*conditions)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit + 1)
    )
    rows = list((await session.execute(query)).scalars())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


async def unread_count(session: AsyncSession, user_id: str, *, now: datetime | None = None) -> int:
    """Exact, and the same cost for 10 unread rows as for 100k: the user's counter in
    ``user_unread_counts`` (kept by the triggers of migration 0003; it counts unread,
    non-cancelled rows whatever their ``send_at``) minus the user's unread rows that are
    scheduled and not due yet (a range scan of idx_notifications_user_unread, normally empty).

    One statement, so that both come from one snapshot: read separately, a commit in between
    could be counted by one and not the other."""
    now = now or utcnow()
    # One bound parameter for both uses of the user ($1 on PostgreSQL, then the time as $2).
    user = bindparam("unread_user_id", user_id, type_=String())
    counter = (
        select(UserUnreadCount.unread).where(UserUnreadCount.user_id == user).scalar_subquery()
    )
    not_due = (
        select(func.count())
        .select_from(Notification)
        .where(
            Notification.user_id == user,
            Notification.send_at > now,
            # A literal, as in _visible_to_user, so that the partial index matches.
            Notification.status != literal_column(f"'{NotificationStatus.CANCELLED.value}'"),
            _UNREAD,
        )
        .scalar_subquery()
    )
    query = select(func.coalesce(counter, literal_column("0", Integer())) - not_due)
    return int((await session.execute(query)).scalar_one())


async def mark_read(
    session: AsyncSession, notification: Notification, now: datetime, wakeups: Wakeups | None
) -> None:
    """Mark one (locked) notification read; ``notification.read`` the first time only."""
    if notification.is_read:
        return
    notification.mark_read(now)
    record = read_record(notification.id, notification.user_id, now)
    await record_in_session(session, [record] if record else [], wakeups)
    # Its waiting escalation steps are skipped in this same transaction (escalation.py).
    await mark_steps(session, [notification], "read", now, wakeups)


async def mark_all_read(session: AsyncSession, user_id: str, wakeups: Wakeups | None) -> int:
    """Mark every visible unread notification of the user read: one UPDATE … RETURNING, and a
    ``notification.read`` for each row it marked."""
    now = utcnow()
    result = await session.execute(
        update(Notification)
        .where(*_visible_to_user(user_id, now), _UNREAD)
        .values(is_read=True, read_at=now, updated_at=now)
        .returning(Notification.id)
        .execution_options(synchronize_session=False)
    )
    ids = list(result.scalars())
    records = [read_record(ident, user_id, now) for ident in ids]
    await record_in_session(session, [r for r in records if r is not None], wakeups)
    # Their waiting escalation steps are skipped in this same transaction (escalation.py).
    stepped = await lock_with_steps(session, user_id, ids)
    await mark_steps(session, stepped, "read", now, wakeups)
    return len(ids)


async def requeue_failed_channels(
    session: AsyncSession, notification: Notification, now: datetime, wakeups: Wakeups | None
) -> int:
    """Give every failed channel of a (locked) notification a fresh retry budget and make the
    row due now (the machine's ``requeued``); the number of channels re-queued."""
    records: list[TransitionRecord] = []
    count = 0
    for delivery in notification.deliveries:
        # The error stays on show until the next attempt says otherwise.
        change = ChannelChange(ChannelEvent.REQUEUED, last_error=delivery.last_error)
        if advance_channel(notification, delivery, change, now, records).applied:
            delivery.attempts_at_requeue = delivery.attempts
            count += 1
    if count:
        summarize_notification(notification, now, records, leased=False)
        notification.next_attempt_at = now
        await record_in_session(session, records, wakeups)
    return count


async def cancel_unsent_channels(
    session: AsyncSession, notification: Notification, now: datetime, wakeups: Wakeups | None
) -> int:
    """Cancel every channel of a (locked) notification that has not been handed over yet;
    the number cancelled."""
    records: list[TransitionRecord] = []
    count = 0
    for delivery in notification.deliveries:
        change = ChannelChange(ChannelEvent.CANCELLED, last_error=delivery.last_error)
        if advance_channel(notification, delivery, change, now, records).applied:
            count += 1
    if count:
        summarize_notification(notification, now, records, leased=False)
        if notification.is_settled:
            notification.next_attempt_at = None
        await record_in_session(session, records, wakeups)
    return count
