"""Each user's unread count, kept by database triggers on ``notifications`` (migration 0003).

``UserUnreadCount.unread`` is the number of the user's notifications with ``is_read = false
AND status <> 'cancelled'``, whatever their ``send_at``: the inbox subtracts the scheduled ones
that are not due yet (``notifier.storage.notifications.unread_count``). Only the triggers write
these tables; application code reads the counts and never writes them, so every writer of
``notifications`` (the API, the workers, bulk SQL) keeps them right.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base


class UserUnreadCount(Base):
    __tablename__ = "user_unread_counts"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    unread: Mapped[int] = mapped_column(Integer)


# On PostgreSQL, the per-row deltas of an UPDATE that sets ``is_read`` (mark-all-read), folded
# into the counts when that statement ends: always empty between statements. UNLOGGED there
# (the migration says so; the model has no portable spelling for it). Unused on SQLite.
user_unread_deltas = Table(
    "user_unread_deltas",
    Base.metadata,
    Column("user_id", String(255), nullable=False),
    Column("delta", Integer, nullable=False),
)
