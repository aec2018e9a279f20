"""The words of a notification's life (docs/architecture.md, "Notification"): its type,
priority and channels, and the statuses of a notification and of each of its channels.

Plain enums with no behaviour; what may follow what is ``lifecycle.machine``.
"""

from __future__ import annotations

from enum import StrEnum


class NotificationType(StrEnum):
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"
    PROGRESS = "progress"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


# Lower rank is claimed first when there is a backlog.
PRIORITY_RANK = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class Channel(StrEnum):
    WEBSOCKET = "websocket"
    EMAIL = "email"
    BROWSER = "browser"
    SMS = "sms"


CHANNEL_NAMES = frozenset(c.value for c in Channel)


class NotificationStatus(StrEnum):
    PENDING = "pending"
    DISPATCHING = "dispatching"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class ChannelStatus(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # Held for a digest and gone out inside it (provider_id ``digest:<id>``; docs/architecture.md,
    # "Digest, throttle and escalation"): counted as sent for the notification's status.
    DIGESTED = "digested"


# A channel in one of these has gone out (or its content has).
SUCCEEDED = frozenset({ChannelStatus.SENT, ChannelStatus.DELIVERED, ChannelStatus.DIGESTED})
# A channel in one of these still waits to be sent.
AWAITING_SEND = frozenset({ChannelStatus.PENDING, ChannelStatus.RETRYING})
# A channel in one of these is never sent again by a worker.
SETTLED = frozenset(ChannelStatus) - AWAITING_SEND
# A notification in one of these has nothing left to send.
FINISHED = frozenset(
    {
        NotificationStatus.DELIVERED,
        NotificationStatus.PARTIALLY_FAILED,
        NotificationStatus.FAILED,
        NotificationStatus.SKIPPED,
        NotificationStatus.CANCELLED,
        NotificationStatus.EXPIRED,
    }
)
