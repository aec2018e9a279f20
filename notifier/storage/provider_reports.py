"""What a provider reports about a message after the worker handed it over (Twilio's status
callback): which notification a provider's id belongs to, and the report applied to its channel
through the state machine (``confirmed``, ``reported_failed``) — a batch of one of
``outcome_batch.settle_externally``, with its transitions recorded in the same transaction.
And a recipient's SMS opt-out, which the provider reports on a send."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.lifecycle.machine import ChannelChange
from notifier.models.base import utcnow
from notifier.models.notification import NotificationDelivery
from notifier.models.recipient import Recipient
from notifier.storage.outcome_batch import ExternalSettlement, settle_externally
from notifier.storage.transitions import Wakeups
from notifier.storage.webhooks import WEBHOOK_WAKEUP_CHANNEL


async def notification_for_provider_id(
    sessions: async_sessionmaker[AsyncSession], channel: str, provider_id: str
) -> uuid.UUID | None:
    """The notification whose ``channel`` holds ``provider_id``, as committed now (a session of
    its own: a caller looking again sees what was committed since)."""
    query = select(NotificationDelivery.notification_id).where(
        NotificationDelivery.channel == channel, NotificationDelivery.provider_id == provider_id
    )
    async with sessions() as session:
        return await session.scalar(query)


async def apply_report(
    session: AsyncSession,
    notification_id: uuid.UUID,
    channel: str,
    change: ChannelChange,
    wakeups: Wakeups | None = None,
) -> bool:
    """Apply a provider's report in the session's transaction (the caller commits); False if
    the machine refused it (a duplicate, or a report that would move the channel back)."""
    (moved,), webhooks = await settle_externally(
        await session.connection(), [ExternalSettlement(notification_id, channel, change)]
    )
    if webhooks and wakeups is not None:
        wakeups.after_commit(session, WEBHOOK_WAKEUP_CHANNEL)
    return moved


async def mark_sms_opted_out(sessions: async_sessionmaker[AsyncSession], user_id: str) -> None:
    """The provider says the recipient opted out of SMS (Twilio 21610): stored on the
    recipient, in a transaction of its own."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(Recipient)
            .where(Recipient.user_id == user_id)
            .values(sms_opted_out=True, updated_at=utcnow())
        )
