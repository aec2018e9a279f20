"""The throttle at the worker's send decision (docs/architecture.md, "Digest, throttle and
escalation"): a notification with a ``throttle`` takes a slot (``notifier/storage/throttles.py``)
before its email, sms or browser channel goes out; past the limit those channels are
``skipped`` ``"throttled"``. The websocket channel is never throttled.

Only a notification that is going to send one of them takes a slot: one whose counted channels
are all dropped for the recipient (opted out, no address, channel not configured) or deferred
(quiet hours) would otherwise use up the window for nothing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.channels.base import DeliveryChannel, Destination
from notifier.storage import dispatch as queries
from notifier.storage.throttles import reserve
from workers.rules import destination_for, precheck

THROTTLED_CHANNELS = frozenset({"email", "sms", "browser"})
THROTTLED = "throttled"


def _reachable(channel: str, destination: Destination) -> bool:
    """Whether the recipient has somewhere for ``channel`` to go (the channel itself refuses
    a send without one: ``NotDeliverable``)."""
    if channel == "email":
        return bool(destination.email)
    if channel == "sms":
        return bool(destination.phone)
    return bool(destination.push_targets)


def _would_send(
    delivery: queries.ClaimedDelivery,
    work: queries.ClaimedWork,
    channels: Mapping[str, DeliveryChannel],
    now: datetime,
) -> bool:
    channel = channels.get(delivery.channel)
    try:
        verdict = precheck(
            delivery.channel,
            work.notification,
            work.recipient,
            configured=channel is not None and channel.configured,
            now=now,
        )
        destination = destination_for(work.notification, work.recipient, work.push_subscriptions)
    except Exception:  # the send decision fails the same way: nothing goes out
        return False
    return verdict is None and _reachable(delivery.channel, destination)


async def throttled_out(
    sessions: async_sessionmaker[AsyncSession],
    work: queries.ClaimedWork,
    due: list[queries.ClaimedDelivery],
    now: datetime,
    channels: Mapping[str, DeliveryChannel],
) -> list[queries.ClaimedDelivery]:
    """The due channels the throttle holds back (none when there is no throttle, nothing of
    them would go out now, or the notification got a slot). The reservation commits before
    anything is sent."""
    notification = work.notification
    throttle = (notification.delivery_plan or {}).get("throttle")
    counted = [d for d in due if d.channel in THROTTLED_CHANNELS]
    if throttle is None or not any(_would_send(d, work, channels, now) for d in counted):
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
