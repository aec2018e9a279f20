"""What a new ``notifications`` row, and a new ``notification_deliveries`` row, holds, by
column name: ``Notification.build`` (notification.py) and the enqueue's bulk insert
(``storage/enqueue.py``) write the same rows from here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from notifier.lifecycle.statuses import PRIORITY_RANK, ChannelStatus, NotificationStatus, Priority

# Member -> plain str: ``Enum.value`` is a descriptor call, slow enough to show in the profile
# of a 1000-row enqueue; a dict lookup is not.
_PLAIN_PRIORITY: dict[str, str] = {m: m.value for m in Priority}


# What every new row holds whatever was asked: ``new_row_values`` and the enqueue's bulk insert
# (which sends these as constants, the rest as one array per column) read them from here.
NEW_ROW_CONSTANTS: dict[str, Any] = {
    "is_read": False,
    "read_at": None,
    "status": NotificationStatus.PENDING.value,
    "retry_count": 0,
    "lease_owner": None,
    "lease_expires_at": None,
}
NEW_DELIVERY_CONSTANTS: dict[str, Any] = {
    "status": ChannelStatus.PENDING.value,
    "attempts": 0,
    "attempts_at_requeue": 0,
    "last_error": None,
    "provider_id": None,
    "unknown_outcomes": 0,
}


def new_row_values(
    *,
    ident: uuid.UUID,
    user_id: str,
    title: str,
    message: str,
    notification_type: str,
    priority: Priority,
    channels: list[str],
    related_task_id: str | None,
    action_url: str | None,
    metadata: dict[str, Any],
    recipient: dict[str, Any] | None,
    send_at: datetime | None,
    expires_at: datetime | None,
    dedupe_key: str | None,
    now: datetime,
    rendered_parts: dict[str, str] | None = None,
    cancellation_key: str | None = None,
    delivery_plan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every column of a new ``notifications`` row, by column name: ``Notification.build`` and
    the enqueue (``storage/enqueue.py``) write the same row. ``channels`` are unique plain names;
    ``notification_type`` and ``priority`` plain values (``priority`` also sets the rank)."""
    return {
        "id": ident,
        "user_id": user_id,
        "title": title,
        "message": message,
        "notification_type": notification_type,
        "priority": _PLAIN_PRIORITY[priority],
        "priority_rank": PRIORITY_RANK[priority],
        "channels": channels,
        "related_task_id": related_task_id,
        "action_url": action_url,
        "notification_metadata": metadata,
        "recipient": recipient,
        "send_at": send_at,
        "expires_at": expires_at,
        "created_at": now,
        "updated_at": now,
        "dedupe_key": dedupe_key,
        "rendered_parts": rendered_parts,
        "cancellation_key": cancellation_key,
        "delivery_plan": delivery_plan,
        # A row scheduled for later is claimed then, not before.
        "next_attempt_at": max(send_at, now) if send_at else now,
        **NEW_ROW_CONSTANTS,
    }


def new_delivery_values(notification_id: uuid.UUID, channel: str, now: datetime) -> dict[str, Any]:
    """Every column of a new channel's ``notification_deliveries`` row."""
    return {
        "notification_id": notification_id,
        "channel": channel,
        "updated_at": now,
        # Varies: an escalation step's channel is due at the step's time (storage/enqueue.py).
        "next_attempt_at": None,
        **NEW_DELIVERY_CONSTANTS,
    }
