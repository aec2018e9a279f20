"""Recipient (a user's addresses and preferences) and their browser push subscriptions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base, iso, utcnow


class Recipient(Base):
    __tablename__ = "recipients"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    locale: Mapped[str | None] = mapped_column(String(35))
    timezone: Mapped[str | None] = mapped_column(String(64))
    # {"email": false, ...} opts a channel out; {"types": {"progress": ["websocket"]}} narrows.
    preferences: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # {"start": "22:00", "end": "07:00"} in the recipient's timezone.
    quiet_hours: Mapped[dict[str, Any] | None]
    sms_opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "email": self.email,
            "phone": self.phone,
            "locale": self.locale,
            "timezone": self.timezone,
            "preferences": self.preferences,
            "quiet_hours": self.quiet_hours,
            "sms_opted_out": self.sms_opted_out,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class PushSubscription(Base):
    __tablename__ = "push_subscriptions"
    __table_args__ = (
        Index("idx_push_subscriptions_user_id", "user_id"),
        Index("uq_push_subscriptions_endpoint", "endpoint", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(2048))
    p256dh: Mapped[str] = mapped_column(Text)
    auth: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def as_webpush_info(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}
