"""One row per change of status (docs/architecture.md, "The state machine"): what the webhook
outbox reads and what the operator console counts.

``latency_ms`` is set only on a channel's first ``sent``/``delivered``: milliseconds from when
the notification was due to then, so "enqueue → sent" percentiles are one aggregate over the
window's rows, with no join back to the notification.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base, utcnow


class NotificationTransition(Base):
    __tablename__ = "notification_transitions"
    __table_args__ = (
        # The console reads a time window, per channel.
        Index("idx_transitions_occurred_channel", "occurred_at", "channel"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    notification_id: Mapped[uuid.UUID]
    user_id: Mapped[str] = mapped_column(String(255))
    # channel.<status entered>, notification.settled, notification.read
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(20))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
