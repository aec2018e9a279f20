"""Browser push subscriptions: subscribe (one row per endpoint), unsubscribe, and forget one
that its push service reported gone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.models.base import utcnow
from notifier.models.recipient import PushSubscription


@dataclass(frozen=True, slots=True)
class Subscribed:
    subscription: PushSubscription
    created: bool  # False: the endpoint was known, and now belongs to this user


async def subscribe(
    session: AsyncSession, user_id: str, *, endpoint: str, p256dh: str, auth: str
) -> Subscribed:
    """Store the subscription and commit. A browser profile has one endpoint; whoever
    subscribes with it last owns it.

    The same browser subscribing twice at once: both may find no row and both insert; the loser
    of that race (unique endpoint) goes round again and updates the winner's row."""
    query = select(PushSubscription).where(PushSubscription.endpoint == endpoint)
    for attempt in (1, 2):
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
        else:
            row.user_id = user_id
        row.p256dh = p256dh
        row.auth = auth
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            if attempt == 2:
                raise
            continue
        return Subscribed(row, created)
    raise AssertionError("unreachable")


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
