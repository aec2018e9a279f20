"""The digest at the worker's send decision (docs/architecture.md, "Digest, throttle and
escalation"; the windows are ``notifier/storage/digests.py``): a notification with a ``digest``
has its due email, sms and browser channels held until its window closes, or sent at once when
it opened a ``leading`` window; when a held member comes due at the close, this worker closes
the window (or finds it closed by another)."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.models.notification import ChannelStatus
from notifier.storage import dispatch as queries
from notifier.storage.digests import HELD_CHANNELS, Decision, decide
from notifier.templates import TemplateRenderer

HELD = "held for digest"


@cache
def digest_renderer() -> TemplateRenderer:
    """The worker process's one renderer for digest texts (a thread and a compiled-template
    cache), made at the first close: closes are rare, most workers never need it."""
    return TemplateRenderer(threads=1)


async def digest_decision(
    sessions: async_sessionmaker[AsyncSession],
    notification: queries.ClaimedNotification,
    due: list[queries.ClaimedDelivery],
    now: datetime,
) -> tuple[list[queries.ClaimedDelivery], Decision]:
    """The due channels the digest takes from this send (none: send as usual), and why."""
    digest = (notification.delivery_plan or {}).get("digest")
    counted = [d for d in due if d.channel in HELD_CHANNELS]
    if digest is None or not counted:
        return [], Decision("send")
    async with sessions() as session, session.begin():
        decision = await decide(
            session,
            notification_id=notification.id,
            user_id=notification.user_id,
            digest=digest,
            created_at=notification.created_at,
            now=now,
            waiting=any(d.status == ChannelStatus.PENDING for d in counted),
            renderer=digest_renderer(),
        )
    return ([] if decision.kind == "send" else counted), decision
