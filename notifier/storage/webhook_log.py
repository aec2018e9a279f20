"""Pruning of the webhook deliveries log and of old events, which the worker's webhook sender
runs hourly (``NOTIFIER_WEBHOOK_LOG_DAYS``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, exists, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.webhook import WebhookAttempt, WebhookDelivery, WebhookEvent


async def prune(session: AsyncSession, *, older_than: datetime, chunk: int = 5000) -> int:
    """Delete the log entries from before ``older_than``, and the events from before it
    whose deliveries are all settled and untouched since (with those deliveries). The number
    of rows deleted; commits after each chunk, so no transaction grows with the backlog."""
    old_attempts = select(WebhookAttempt.id).where(WebhookAttempt.at < older_than).limit(chunk)
    still_active = exists().where(
        WebhookDelivery.event_id == WebhookEvent.id,
        or_(
            WebhookDelivery.next_attempt_at.is_not(None),
            WebhookDelivery.updated_at >= older_than,
        ),
    )
    old_events = (
        select(WebhookEvent.id)
        .where(WebhookEvent.created_at < older_than, not_(still_active))
        .limit(chunk)
    )
    deleted = 0
    for table, ids in ((WebhookAttempt, old_attempts), (WebhookEvent, old_events)):
        while True:
            result = await session.execute(delete(table).where(table.id.in_(ids.scalar_subquery())))
            await session.commit()
            count = int(result.rowcount or 0)  # type: ignore[attr-defined]
            deleted += count
            if count < chunk:
                break
    return deleted
