"""Recipient profiles: read one, write one (whole or in part)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.base import utcnow
from notifier.models.recipient import Recipient
from notifier.storage.races import first_write_wins

# The fields a producer writes (the rest are the service's own).
RECIPIENT_FIELDS = ("email", "phone", "locale", "timezone", "preferences", "quiet_hours")


async def get_recipient(session: AsyncSession, user_id: str) -> Recipient | None:
    return await session.get(Recipient, user_id)


async def save_recipient(session: AsyncSession, user_id: str, fields: dict[str, Any]) -> Recipient:
    """Set ``fields`` (names from ``RECIPIENT_FIELDS``) on the user's profile, creating it if
    absent, and commit. A new phone number clears the SMS opt-out: it belonged to the old one."""

    async def write() -> Recipient:
        row = await session.get(Recipient, user_id, with_for_update=True, populate_existing=True)
        now = utcnow()
        if row is None:
            row = Recipient(user_id=user_id, created_at=now, sms_opted_out=False, preferences={})
            session.add(row)
        elif "phone" in fields and fields["phone"] != row.phone:
            row.sms_opted_out = False
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated_at = now
        return row

    return await first_write_wins(session, write)


async def update_preferences(
    session: AsyncSession,
    user_id: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> Recipient:
    """Read the user's preferences under the row's lock, store ``change(preferences)``, and
    commit; a user without a profile gets one (an email may have reached them through a
    notification's own address). Two concurrent changes apply one after the other."""

    async def write() -> Recipient:
        row = await session.get(Recipient, user_id, with_for_update=True, populate_existing=True)
        now = utcnow()
        if row is None:
            row = Recipient(user_id=user_id, created_at=now, sms_opted_out=False, preferences={})
            session.add(row)
        row.preferences = change(dict(row.preferences or {}))
        row.updated_at = now
        return row

    return await first_write_wins(session, write)
