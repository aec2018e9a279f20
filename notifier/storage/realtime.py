"""Queries behind the WebSocket endpoint: what to replay on connect, and acks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.notification import (
    AWAITING_SEND,
    Channel,
    ChannelStatus,
    Notification,
    NotificationDelivery,
)
from notifier.storage.dispatch import settle_channel_externally

REPLAY_LIMIT = 500


async def unacked_websocket_notifications(
    session: AsyncSession, user_id: str, *, limit: int = REPLAY_LIMIT
) -> Sequence[Notification]:
    """The user's websocket notifications that went out but were never acked, oldest first."""
    query = (
        select(Notification)
        .join(NotificationDelivery)
        .where(
            Notification.user_id == user_id,
            NotificationDelivery.channel == Channel.WEBSOCKET.value,
            NotificationDelivery.status == ChannelStatus.SENT.value,
        )
        .order_by(Notification.created_at, Notification.id)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def acknowledge(session: AsyncSession, user_id: str, notification_id: uuid.UUID) -> bool:
    """Mark the websocket channel ``delivered``; False for another user's id or a repeat ack."""
    owner = await session.scalar(
        select(Notification.user_id).where(Notification.id == notification_id)
    )
    if owner != user_id:
        return False
    # An ack may overtake the worker's own record of `sent`; it still counts.
    return await settle_channel_externally(
        session,
        notification_id,
        Channel.WEBSOCKET.value,
        ChannelStatus.DELIVERED,
        allowed_from=frozenset({ChannelStatus.SENT, *AWAITING_SEND}),
    )
