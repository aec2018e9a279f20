"""Outbound webhooks: the producer's endpoints, the events (an outbox written in the same
transaction as the change each reports), one delivery per event and endpoint, and the log of
every attempt.

A delivery is a small queue row, claimed the way notifications are (``storage/webhooks.py``):
``next_attempt_at`` is when a worker must look at it next and NULL once it is settled, so
settled rows drop out of the partial claim index; a claimed row's ``next_attempt_at`` is its
lease expiry, so the delivery of a worker that died comes due again by itself.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base, utcnow


class WebhookDeliveryStatus(StrEnum):
    PENDING = "pending"  # not tried yet
    RETRYING = "retrying"  # tried, failed, waiting for its next attempt
    SUCCEEDED = "succeeded"  # a 2xx
    FAILED = "failed"  # the schedule ran out, or the endpoint answered 410


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    url: Mapped[str] = mapped_column(String(2048))
    # Event types this endpoint receives; ["*"] for all of them.
    events: Mapped[list[str]] = mapped_column(default=list)
    description: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    # The HMAC key itself (the bytes behind "whsec_<base64>"): signing needs the key, so it
    # cannot be stored hashed. README "Webhooks" says how it is kept and why.
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    # After a rotation the replaced key signs too, until this time.
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookEvent(Base):
    """One change, once: its id is the ``webhook-id`` of every delivery of it."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        # Replay reads the events since a time; pruning deletes the oldest.
        Index("idx_webhook_events_created", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        # The claim walks each endpoint's due rows in due order (a LATERAL per endpoint, so
        # that a backlog at one endpoint never hides another's), and an idle worker finds the
        # next due time per endpoint here too; settled rows are not in it.
        Index(
            "idx_webhook_deliveries_claim",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("next_attempt_at IS NOT NULL"),
            sqlite_where=text("next_attempt_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16), default=WebhookDeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookAttempt(Base):
    """The deliveries log: one row per HTTP attempt, kept ``WEBHOOK_LOG_DAYS``."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        # GET /v1/webhook-endpoints/{id}/deliveries: an endpoint's newest first.
        Index("idx_webhook_attempts_endpoint_at", "endpoint_id", "at"),
        Index("idx_webhook_attempts_at", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # No foreign keys (migration 0010): a trigger per logged attempt cost more than the rest of
    # its row. The outcome statement logs an attempt only while its endpoint and event exist
    # (``storage/webhook_record.py``), and deleting an endpoint deletes its log
    # (``storage/webhooks.delete_endpoint``).
    event_id: Mapped[uuid.UUID] = mapped_column()
    endpoint_id: Mapped[uuid.UUID] = mapped_column()
    event_type: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
