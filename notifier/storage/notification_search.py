"""An operator's search over every user's notifications (``GET /v1/notifications``): the
console's dead letter (``channel_status=failed``) and any look-up by status, channel, user or
time. Newest first, keyset-paged on (created_at, id) with the inbox's cursors, so a deep page
costs what the first does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, exists
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.notification import Notification, NotificationDelivery
from notifier.storage.notifications import newest_first


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Each field narrows the search; None leaves it open. ``channel`` with ``channel_status``
    means that channel in that status; ``channel_status`` alone, any channel in it."""

    status: str | None = None
    channel: str | None = None
    channel_status: str | None = None
    user_id: str | None = None
    since: datetime | None = None  # created at or after


@dataclass(frozen=True, slots=True)
class SearchPage:
    items: Sequence[Notification]
    next_cursor: str | None


def _conditions(search: SearchFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if search.status is not None:
        conditions.append(Notification.status == search.status)
    if search.user_id is not None:
        conditions.append(Notification.user_id == search.user_id)
    if search.since is not None:
        conditions.append(Notification.created_at >= search.since)
    if search.channel is not None or search.channel_status is not None:
        # One channel row must satisfy both, so "email failed" does not match a notification
        # whose email was delivered and whose sms failed.
        delivery = [NotificationDelivery.notification_id == Notification.id]
        if search.channel is not None:
            delivery.append(NotificationDelivery.channel == search.channel)
        if search.channel_status is not None:
            delivery.append(NotificationDelivery.status == search.channel_status)
        conditions.append(exists().where(*delivery))
    return conditions


async def search_notifications(
    session: AsyncSession, search: SearchFilter, *, limit: int, cursor: str | None
) -> SearchPage:
    """Raises ``InvalidCursor`` for a cursor this service did not issue."""
    rows, next_cursor = await newest_first(session, _conditions(search), limit=limit, cursor=cursor)
    return SearchPage(rows, next_cursor)
