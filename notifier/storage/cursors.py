"""Keyset-paging cursors: an opaque token for (timestamp, id), the last row of a page.

Newest-first pages (the inbox) and oldest-first pages (task logs) use the same token; the query
decides the direction. A cursor is decoded back to a UTC time, so one that names a moment no
database can hold (year 1 at UTC+14, say) is refused here as invalid, not passed to a query."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime


class InvalidCursor(ValueError):
    """The paging cursor is not one this service issued."""


def encode_cursor(timestamp: datetime, row_id: uuid.UUID) -> str:
    raw = f"{timestamp.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        timestamp = datetime.fromisoformat(stamp)
        if timestamp.tzinfo is None:
            raise ValueError("naive")
        return timestamp.astimezone(UTC), uuid.UUID(ident)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor(
            "the cursor is not valid; use next_cursor from a previous page"
        ) from exc
