"""Queries behind the WebSocket endpoint: what to replay on connect, and acks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.base import utcnow
from notifier.models.notification import (
    Channel,
    ChannelStatus,
    Notification,
    NotificationDelivery,
)
from notifier.storage.escalation import mark_acked
from notifier.storage.outcome_batch import ExternalSettlement, settle_externally
from notifier.storage.transitions import Wakeups
from notifier.storage.webhooks import WEBHOOK_WAKEUP_CHANNEL

REPLAY_LIMIT = 500


async def unacked_for_users(
    session: AsyncSession, user_ids: Sequence[str], *, limit: int = REPLAY_LIMIT
) -> dict[str, list[Notification]]:
    """The users' websocket notifications that went out but were never acked, oldest first, in
    two statements: the ids (at most ``limit`` per user), then, only if there are any, their
    rows."""
    ranked = (
        select(
            Notification.id,
            func.row_number()
            .over(
                partition_by=Notification.user_id,
                order_by=(Notification.created_at, Notification.id),
            )
            .label("rank"),
        )
        .join(NotificationDelivery)
        .where(
            Notification.user_id.in_(set(user_ids)),
            NotificationDelivery.channel == Channel.WEBSOCKET.value,
            NotificationDelivery.status == ChannelStatus.SENT.value,
        )
        .subquery()
    )
    ids = list((await session.execute(select(ranked.c.id).where(ranked.c.rank <= limit))).scalars())
    found: dict[str, list[Notification]] = {}
    if not ids:
        return found
    rows = await session.execute(
        select(Notification)
        .where(Notification.id.in_(ids))
        .order_by(Notification.created_at, Notification.id)
    )
    for row in rows.scalars():
        found.setdefault(row.user_id, []).append(row)
    return found


class AckOutcome(StrEnum):
    """What one client ack did (docs/architecture.md, "WebSocket": an ack that records nothing
    is answered as such, not as ``acked``)."""

    ACKED = "acked"  # the websocket channel is now delivered
    ALREADY_ACKED = "already_acked"  # it was delivered before: a repeat, still answered acked
    NOT_FOUND = "not_found"  # no notification of this user has that id (another's, or none)
    NOT_ACKABLE = "not_ackable"  # theirs, but no websocket channel an ack can settle


async def acknowledge_many(
    session: AsyncSession,
    acks: Sequence[tuple[str, uuid.UUID]],
    wakeups: Wakeups | None = None,
) -> list[AckOutcome]:
    """Mark the websocket channel ``delivered`` for each (user id, notification id), in one
    transaction (the caller commits): the machine's ``acked``, which may overtake the worker's
    own record of ``sent`` and still counts. ``wakeups`` wakes an in-process webhook sender
    after the commit when the acks wrote webhook events. One ownership query, then
    ``settle_externally`` for the batch, which
    locks the rows in id order, as every batch writer does, so two batches never wait in a
    cycle. Only when some owned ack moved nothing, one more query tells a repeat from an ack
    that cannot apply (channel failed, skipped, expired, cancelled, or not websocket at all)."""
    owners = dict(
        (
            await session.execute(
                select(Notification.id, Notification.user_id).where(
                    Notification.id.in_({ident for _, ident in acks})
                )
            )
        ).all()
    )
    owned = sorted({(u, i) for u, i in acks if owners.get(i) == u}, key=lambda ack: ack[1])
    moved, webhooks = await settle_externally(
        await session.connection(),
        [ExternalSettlement(ident, Channel.WEBSOCKET.value, _ACK) for _, ident in owned],
    )
    if webhooks and wakeups is not None:
        wakeups.after_commit(session, WEBHOOK_WAKEUP_CHANNEL)
    # An ack is "seen": waiting escalation steps are skipped in this transaction (escalation.py).
    await mark_acked(
        session, [ack for ack, did in zip(owned, moved, strict=True) if did], utcnow(), wakeups
    )
    outcomes = {
        ack: AckOutcome.ACKED if did else AckOutcome.NOT_ACKABLE
        for ack, did in zip(owned, moved, strict=True)
    }
    unmoved = [ident for (_, ident), did in zip(owned, moved, strict=True) if not did]
    if unmoved:
        delivered = set(
            (
                await session.execute(
                    select(NotificationDelivery.notification_id).where(
                        NotificationDelivery.notification_id.in_(unmoved),
                        NotificationDelivery.channel == Channel.WEBSOCKET.value,
                        NotificationDelivery.status == ChannelStatus.DELIVERED.value,
                    )
                )
            ).scalars()
        )
        for ack in outcomes:
            if ack[1] in delivered:
                outcomes[ack] = AckOutcome.ALREADY_ACKED
    return [outcomes.get(ack, AckOutcome.NOT_FOUND) for ack in acks]


_ACK = ChannelChange(ChannelEvent.ACKED)
