"""``notification_transitions``: one row per change of status of a notification or of one of its
channels, written in the transaction of the change (docs/architecture.md, "The state machine").

The webhook outbox is fed from the same rows as they are written, and the operator console
counts them (its charts read exactly these columns, by ``occurred_at`` and ``channel``). Only
``notifier/storage/transitions.py`` writes here.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base

# The channel statuses the operator console counts; its queries repeat this predicate
# literally so that the planner can use the partial index below.
CONSOLE_KINDS = "kind IN ('channel.sent', 'channel.delivered', 'channel.failed', 'channel.skipped')"


class NotificationTransition(Base):
    __tablename__ = "notification_transitions"
    __table_args__ = (
        Index("idx_transitions_notification", "notification_id"),
        # The console's charts: a time window, per channel.
        Index("idx_transitions_occurred_channel", "occurred_at", "channel"),
        # What the console counts, and only that, read by an index-only scan on PostgreSQL
        # (notifier/storage/admin_stats.py; migration 0007; bench/RESULTS.md).
        Index(
            "idx_transitions_console",
            "occurred_at",
            postgresql_include=["channel", "kind", "latency_ms"],
            postgresql_where=text(CONSOLE_KINDS),
            sqlite_where=text(CONSOLE_KINDS),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # No foreign key: the history outlives a notification deleted meanwhile, and the insert
    # need not look the parent up.
    notification_id: Mapped[uuid.UUID]
    user_id: Mapped[str] = mapped_column(String(255))
    # channel.<status entered>, notification.settled or notification.read
    kind: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str | None] = mapped_column(String(20))  # null for notification kinds
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int | None] = mapped_column(Integer)  # the channel's count after it
    # Only on a channel's first sent/delivered: ms from when it was due (send_at or created_at).
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[datetime]
