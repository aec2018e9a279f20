"""``digest_windows`` and ``digest_members`` (docs/architecture.md, "Digest, throttle and
escalation"). Written only by ``notifier/storage/digests.py``.

One open window per (user, key): a unique index over the rows not yet closed, so two workers
that both find no window cannot both open one. A member's held channels wait, ``pending``, until
the window's ``closes_at``; the close is one transaction that marks the window closed (the
conditional update that only one closer wins), creates the ONE digest notification and turns the
members' held channels ``digested``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base


class DigestWindow(Base):
    __tablename__ = "digest_windows"
    __table_args__ = (
        Index(
            "uq_digest_windows_open",
            "user_id",
            "key",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(57))
    opened_at: Mapped[datetime]
    closes_at: Mapped[datetime]
    # The notification that opened it (sent at once when ``leading``: not a member).
    opener_id: Mapped[uuid.UUID]
    # Bumped by each joiner: the write that takes the row's lock, so a join and a close of one
    # window are serialized by the database.
    members: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[datetime | None]
    digest_id: Mapped[uuid.UUID | None]


class DigestMember(Base):
    __tablename__ = "digest_members"

    window_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("digest_windows.id", ondelete="CASCADE"), primary_key=True
    )
    # A notification is a member of one window at most.
    notification_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, unique=True)
    joined_at: Mapped[datetime]
    # The opener of a ``leading`` window: decided (sent at once), never digested.
    leading: Mapped[bool] = mapped_column(Boolean, default=False)
