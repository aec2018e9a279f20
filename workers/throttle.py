"""The throttle at the worker's send decision (docs/architecture.md, "Digest, throttle and
escalation"): a notification with a ``throttle`` takes a slot (``notifier/storage/throttles.py``)
before its email, sms or browser channel goes out; past the limit those channels are
``skipped`` ``"throttled"``. The websocket channel is never throttled."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.storage import dispatch as queries
from notifier.storage.throttles import reserve

THROTTLED_CHANNELS = frozenset({"email", "sms", "browser"})
THROTTLED = "throttled"


async def throttled_out(
    sessions: async_sessionmaker[AsyncSession],
    notification: queries.ClaimedNotification,
    due: list[queries.ClaimedDelivery],
    now: datetime,
) -> list[queries.ClaimedDelivery]:
    """The due channels the throttle holds back (none when there is no throttle or the
    notification got a slot). The reservation commits before anything is sent."""
    throttle = (notification.delivery_plan or {}).get("throttle")
    counted = [d for d in due if d.channel in THROTTLED_CHANNELS]
    if throttle is None or not counted:
        return []
    async with sessions() as session, session.begin():
        allowed = await reserve(
            session,
            user_id=notification.user_id,
            key=throttle["key"],
            limit=throttle["limit"],
            window_seconds=throttle["window_seconds"],
            notification_id=notification.id,
            now=now,
        )
    return [] if allowed else counted
