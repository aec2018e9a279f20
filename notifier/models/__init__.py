"""The ORM models. Importing this package registers every table on ``Base.metadata``."""

from notifier.models import webhook  # noqa: F401 - registers the webhook tables
from notifier.models.base import Base, utcnow
from notifier.models.digest import DigestMember, DigestWindow  # noqa: F401 - tables
from notifier.models.idempotency import IdempotencyRecord
from notifier.models.log import LogLevel, TaskLog
from notifier.models.metric import ProgressMetric
from notifier.models.notification import (
    Channel,
    ChannelStatus,
    Notification,
    NotificationDelivery,
    NotificationStatus,
    NotificationType,
    Priority,
)
from notifier.models.recipient import PushSubscription, Recipient
from notifier.models.task import TaskProgress, TaskStatus
from notifier.models.template import Template, TemplateVersionCounter  # noqa: F401 - tables
from notifier.models.throttle import ThrottleSlot  # noqa: F401 - registers the table
from notifier.models.transition import NotificationTransition
from notifier.models.unread import UserUnreadCount

__all__ = [
    "Base",
    "Channel",
    "ChannelStatus",
    "IdempotencyRecord",
    "LogLevel",
    "Notification",
    "NotificationDelivery",
    "NotificationStatus",
    "NotificationTransition",
    "NotificationType",
    "Priority",
    "ProgressMetric",
    "PushSubscription",
    "Recipient",
    "TaskLog",
    "TaskProgress",
    "TaskStatus",
    "UserUnreadCount",
    "utcnow",
]
