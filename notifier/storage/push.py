"""Browser push subscriptions: subscribe (one row per endpoint), unsubscribe, and forget one
that its push service reported gone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.models.base import utcnow
from notifier.models.recipient import PushSubscription
from notifier.storage.races import first_write_wins


@dataclass(frozen=True, slots=True)
class Subscribed:
    subscription: PushSubscription
    created: bool  # False: the endpoint was known, and now belongs to this user


async def subscribe(
    session: AsyncSession, user_id: str, *, endpoint: str, p256dh: str, auth: str
) -> Subscribed:
    """Store the subscription and commit. A browser profile has one endpoint; whoever
    subscribes with it last owns it (the same browser subscribing twice at once included)."""
    query = select(PushSubscription).where(PushSubscription.endpoint == endpoint)

    async def write() -> Subscribed:
        found = await session.execute(
            query.with_for_update().execution_options(populate_existing=True)
        )
        row = found.scalar_one_or_none()
        created = row is None
        if row is None:
            row = PushSubscription(
                id=uuid.uuid4(), user_id=user_id, endpoint=endpoint, created_at=utcnow()
            )
            session.add(row)
        row.user_id, row.p256dh, row.auth = user_id, p256dh, auth
        return Subscribed(row, created)

    return await first_write_wins(session, write)


async def unsubscribe(session: AsyncSession, user_id: str, endpoint: str) -> bool:
    """Delete the user's subscription with this endpoint (the caller commits); False if none."""
    result = await session.execute(
        delete(PushSubscription).where(
            PushSubscription.user_id == user_id, PushSubscription.endpoint == endpoint
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def forget_subscription(sessions: async_sessionmaker[AsyncSession], endpoint: str) -> None:
    """Delete a subscription its push service reported gone (404/410), in its own transaction."""
    async with sessions() as session, session.begin():
        await session.execute(delete(PushSubscription).where(PushSubscription.endpoint == endpoint))
