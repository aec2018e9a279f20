"""``throttle_slots``: a throttle's sends, one row per slot (docs/architecture.md, "Digest,
throttle and escalation").

A throttle of ``limit`` per ``window_seconds`` for (user, key) has at most ``limit`` slots,
numbered 0…limit-1 (the primary key). A send takes a slot that is new or whose last send is
older than the window, by one conditional write; so at most ``limit`` sends fall in any window,
and two workers can never both take the one past the limit: the database's row lock and the
primary key decide, not a lock in a process. Written only by ``notifier/storage/throttles.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base


class ThrottleSlot(Base):
    __tablename__ = "throttle_slots"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(57), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # The notification that last took the slot, and when: it counts for window_seconds.
    notification_id: Mapped[uuid.UUID]
    reserved_at: Mapped[datetime]
