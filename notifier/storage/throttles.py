"""Throttle reservations (docs/architecture.md, "Digest, throttle and escalation";
the slots' rule is ``notifier/models/throttle.py``).

``reserve`` runs at the worker's send decision, in a transaction of its own that commits
before anything is sent: a notification holds its slot from then on (a worker that dies after
reserving finds its slot again when the row comes back, and sends), and its email, sms and
browser channels together count once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.throttle import ThrottleSlot


async def reserve(
    session: AsyncSession,
    *,
    user_id: str,
    key: str,
    limit: int,
    window_seconds: int,
    notification_id: uuid.UUID,
    now: datetime,
) -> bool:
    """Take a slot of (user, key) for ``notification_id``; False when all ``limit`` slots
    hold a send within the window (the notification is throttled). The caller commits."""
    cutoff = now - timedelta(seconds=window_seconds)
    mine = ThrottleSlot.user_id == user_id, ThrottleSlot.key == key
    # Already holding one (a claim that came back after this worker or another reserved).
    held = await session.scalar(
        select(ThrottleSlot.slot).where(
            *mine,
            ThrottleSlot.notification_id == notification_id,
            ThrottleSlot.reserved_at > cutoff,
        )
    )
    if held is not None:
        return True
    # Bounded: each pass either takes a slot or sees one more taken by a concurrent worker.
    for _ in range(limit + 1):
        aged = list(
            await session.scalars(
                select(ThrottleSlot.slot)
                .where(*mine, ThrottleSlot.reserved_at <= cutoff)
                .order_by(ThrottleSlot.reserved_at)
                .limit(4)
            )
        )
        for slot in aged:
            # Conditional on the slot being aged still: PostgreSQL re-reads the row after
            # waiting for a concurrent taker's lock, so only one of two takes it.
            taken = await session.execute(
                update(ThrottleSlot)
                .where(*mine, ThrottleSlot.slot == slot, ThrottleSlot.reserved_at <= cutoff)
                .values(notification_id=notification_id, reserved_at=now)
            )
            if taken.rowcount:  # type: ignore[attr-defined]
                return True
        used = await session.scalar(select(func.count()).select_from(ThrottleSlot).where(*mine))
        if not aged and (used or 0) >= limit:
            return False
        if (used or 0) < limit:
            name = (await session.connection()).dialect.name
            insert = postgresql.insert if name == "postgresql" else sqlite.insert
            inserted = await session.execute(
                insert(ThrottleSlot)
                .values(
                    user_id=user_id,
                    key=key,
                    slot=used or 0,
                    notification_id=notification_id,
                    reserved_at=now,
                )
                .on_conflict_do_nothing()
            )
            if inserted.rowcount:  # type: ignore[attr-defined]
                return True
    return False
