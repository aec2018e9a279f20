"""Idempotency records: one row per (API key, Idempotency-Key), unique in the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base, utcnow


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    # The primary key is the guarantee: two concurrent requests with the same key race to insert
    # this row in the same transaction as their notification, and the loser's insert fails.
    api_key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
