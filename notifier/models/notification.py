"""Notification and its per-channel delivery rows.

A notification's overall ``status`` is derived from its channels (``lifecycle.machine``,
``derive_status``); each channel's state lives in its own ``notification_deliveries`` row so
that two channels finishing at once never overwrite each other, and so that a provider's
callback finds its row by
``provider_id`` through an index. ``Notification.delivery_status`` assembles the API's
``{"email": {...}, ...}`` object from those rows. What a new row of either table holds, which
the enqueue's bulk insert writes too: new_rows.py (re-exported here).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from notifier.lifecycle.statuses import (
    AWAITING_SEND,
    CHANNEL_NAMES,
    PRIORITY_RANK,
    SETTLED,
    SUCCEEDED,
    Channel,
    ChannelStatus,
    NotificationStatus,
    NotificationType,
    Priority,
)
from notifier.models.base import Base, utcnow
from notifier.models.new_rows import (
    NEW_DELIVERY_CONSTANTS,
    NEW_ROW_CONSTANTS,
    new_delivery_values,
    new_row_values,
)
from notifier.models.shape import DELIVERY_PUBLIC_FIELDS, public_dict

# The words of a notification's life are the lifecycle's; they are re-exported here for the
# code that reads them beside the tables. Its status is derived by ``lifecycle.machine``.
__all__ = [
    "AWAITING_SEND",
    "CHANNEL_NAMES",
    "NEW_DELIVERY_CONSTANTS",
    "NEW_ROW_CONSTANTS",
    "PRIORITY_RANK",
    "SETTLED",
    "SUCCEEDED",
    "Channel",
    "ChannelStatus",
    "Notification",
    "NotificationDelivery",
    "NotificationStatus",
    "NotificationType",
    "Priority",
    "new_delivery_values",
    "new_row_values",
]


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        Index("idx_notifications_user_id", "user_id"),
        Index("idx_notifications_is_read", "is_read"),
        Index("idx_notifications_priority", "priority"),
        Index("idx_notifications_user_read", "user_id", "is_read"),
        Index("idx_notifications_user_priority", "user_id", "priority"),
        # The inbox pages newest-first by (created_at, id) per user.
        Index("idx_notifications_user_created", "user_id", "created_at", "id"),
        Index("idx_notifications_related_task_id", "related_task_id"),
        # Operators' search over every user, newest first (GET /v1/notifications; 0007).
        Index("idx_notifications_created", "created_at", "id"),
        # The inbox's unread count reads only this index (an index-only scan): a user's read
        # and cancelled rows are not in it, and send_at is in it for the "due yet" test. The
        # count's predicates must be literals, as here, for the planner to pick it.
        Index(
            "idx_notifications_user_unread",
            "user_id",
            "send_at",
            postgresql_where=text("is_read = false AND status <> 'cancelled'"),
            sqlite_where=text("is_read = 0 AND status <> 'cancelled'"),
        ),
        # Dispatch claims only rows with work left: once a notification is settled its
        # next_attempt_at is NULL and it drops out of these partial indexes, so millions of
        # delivered rows never slow a claim. The first serves the claim's order (priority, then
        # when due); the second finds the next due time while idle.
        Index(
            "idx_notifications_claim",
            "priority_rank",
            "next_attempt_at",
            postgresql_where=text("next_attempt_at IS NOT NULL"),
            sqlite_where=text("next_attempt_at IS NOT NULL"),
        ),
        Index(
            "idx_notifications_due",
            "next_attempt_at",
            postgresql_where=text("next_attempt_at IS NOT NULL"),
            sqlite_where=text("next_attempt_at IS NOT NULL"),
        ),
        # A trigger that fires twice for the same event (a retrying producer) creates one row.
        Index("uq_notifications_dedupe_key", "dedupe_key", unique=True),
        # POST /v1/notifications/cancel finds a user's rows by key (0009).
        Index(
            "idx_notifications_user_cancellation_key",
            "user_id",
            "cancellation_key",
            postgresql_where=text("cancellation_key IS NOT NULL"),
            sqlite_where=text("cancellation_key IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    notification_type: Mapped[str] = mapped_column(String(20), default=NotificationType.INFO)
    priority: Mapped[str] = mapped_column(String(10), default=Priority.NORMAL)
    priority_rank: Mapped[int] = mapped_column(SmallInteger, default=2)
    channels: Mapped[list[str]] = mapped_column(default=list)
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    read_at: Mapped[datetime | None]
    related_task_id: Mapped[str | None] = mapped_column(String(255))
    action_url: Mapped[str | None] = mapped_column(String(2048))
    notification_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recipient: Mapped[dict[str, Any] | None]  # per-notification address override
    # A template's channel parts (email_subject, email_html, sms, push_title, push_body), as
    # rendered at enqueue; None without a template. What the channels send
    # (docs/architecture.md, "Templates").
    # SQL NULL (not JSON null) when absent, whichever path wrote the row (storage/enqueue.py).
    rendered_parts: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
    # Digest, throttle and escalation as asked at enqueue ({"digest": {...}, "throttle": {...},
    # "escalation": [...]}), None when none was; and the key that
    # POST /v1/notifications/cancel stops it by (docs/architecture.md, "Digest, throttle and
    # escalation").
    delivery_plan: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
    cancellation_key: Mapped[str | None] = mapped_column(String(57))
    status: Mapped[str] = mapped_column(String(20), default=NotificationStatus.PENDING)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    send_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    dedupe_key: Mapped[str | None] = mapped_column(String(255))
    # Dispatch bookkeeping: when work on this row is next due (NULL once settled), and who
    # holds it right now. A claimed row's next_attempt_at is its lease expiry, so a row whose
    # worker died becomes due again by itself.
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]

    deliveries: Mapped[list[NotificationDelivery]] = relationship(
        back_populates="notification",
        cascade="all, delete-orphan",
        order_by="NotificationDelivery.channel",
        lazy="selectin",
    )

    @property
    def delivery_status(self) -> dict[str, dict[str, Any]]:
        return {d.channel: d.to_dict() for d in self.deliveries}

    @property
    def is_settled(self) -> bool:
        return all(d.status in SETTLED for d in self.deliveries)

    def with_message(self, message: str) -> Notification:
        self.message = message
        return self

    def mark_read(self, now: datetime | None = None) -> None:
        if not self.is_read:
            self.is_read = True
            self.read_at = now or utcnow()

    @classmethod
    def build(
        cls,
        *,
        user_id: str,
        title: str,
        message: str,
        notification_type: NotificationType = NotificationType.INFO,
        priority: Priority = Priority.NORMAL,
        channels: Iterable[str] = (Channel.WEBSOCKET,),
        related_task_id: str | None = None,
        action_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        recipient: dict[str, Any] | None = None,
        send_at: datetime | None = None,
        expires_at: datetime | None = None,
        dedupe_key: str | None = None,
        now: datetime | None = None,
        delivery_plan: dict[str, Any] | None = None,
    ) -> Notification:
        """A new, undispatched notification with one pending delivery row per channel (and
        per escalation step channel, due at the step's time: storage/enqueue.py does the
        same)."""
        now = now or utcnow()
        values = new_row_values(
            ident=uuid.uuid4(),
            user_id=user_id,
            title=title,
            message=message,
            notification_type=NotificationType(notification_type).value,
            priority=Priority(priority),
            channels=list(dict.fromkeys(Channel(c).value for c in channels)),
            related_task_id=related_task_id,
            action_url=action_url,
            metadata=metadata or {},
            recipient=recipient,
            send_at=send_at,
            expires_at=expires_at,
            dedupe_key=dedupe_key,
            now=now,
            delivery_plan=delivery_plan,
        )
        deliveries = [
            NotificationDelivery(**new_delivery_values(values["id"], channel, now))
            for channel in values["channels"]
        ]
        for step in (delivery_plan or {}).get("escalation") or ():
            for channel in step["channels"]:
                delivery = NotificationDelivery(**new_delivery_values(values["id"], channel, now))
                delivery.next_attempt_at = now + timedelta(seconds=step["after_seconds"])
                deliveries.append(delivery)
        return cls(**values, deliveries=deliveries)

    @classmethod
    def create_progress_notification(
        cls, user_id: str, task_id: str, progress: float, *, title: str | None = None, **kw: Any
    ) -> Notification:
        return cls.build(
            user_id=user_id,
            title=title or "Task progress",
            message=f"Task {task_id} is {progress:.0f}% done",
            notification_type=NotificationType.PROGRESS,
            priority=Priority.LOW,
            channels=kw.pop("channels", (Channel.WEBSOCKET,)),
            related_task_id=task_id,
            **kw,
        )

    @classmethod
    def create_success_notification(
        cls, user_id: str, title: str, message: str, **kw: Any
    ) -> Notification:
        return cls.build(
            user_id=user_id,
            title=title,
            message=message,
            notification_type=NotificationType.SUCCESS,
            **kw,
        )

    @classmethod
    def create_error_notification(
        cls, user_id: str, title: str, message: str, **kw: Any
    ) -> Notification:
        kw.setdefault("priority", Priority.HIGH)
        return cls.build(
            user_id=user_id,
            title=title,
            message=message,
            notification_type=NotificationType.ERROR,
            **kw,
        )

    def to_dict(self) -> dict[str, Any]:
        """The API's notification (``NotificationPublic``), field for field: ``models/shape.py``."""
        return public_dict(self)


class NotificationDelivery(Base):
    """One channel of one notification: its state, attempts and provider reference."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        Index("idx_notification_deliveries_provider", "channel", "provider_id"),
        # The console's dead letter and queue: the few failed, and the few waiting, channels
        # among all (0007); without them each refresh read the whole table.
        Index(
            "idx_notification_deliveries_failed",
            "notification_id",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
        Index(
            "idx_notification_deliveries_awaiting",
            "notification_id",
            postgresql_where=text("status IN ('pending', 'retrying')"),
            sqlite_where=text("status IN ('pending', 'retrying')"),
        ),
    )

    notification_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default=ChannelStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # attempts when the channel was last re-queued by hand (POST .../retry): the retry budget
    # counts from here, while ``attempts`` keeps the whole history.
    attempts_at_requeue: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(255))
    # Sends whose outcome was unknown (the peer may hold the message); the next send is told so,
    # and a second unknown outcome ends the channel rather than risk a third copy.
    unknown_outcomes: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    notification: Mapped[Notification] = relationship(back_populates="deliveries")

    def to_dict(self) -> dict[str, Any]:
        return public_dict(self, DELIVERY_PUBLIC_FIELDS)
