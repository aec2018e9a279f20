"""``Idempotency-Key`` for producer writes: the same key and body answer 200 with the first
response; the same key with another body (or on another endpoint) answers 409.

The record is inserted in the same transaction as what the request writes. Concurrent requests
with one key race on the record's primary key: the loser's insert fails, it rolls back, and it
answers with the winner's stored response — so the database, not Python, guarantees one write.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Header, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from notifier.api.errors import Conflict, Unprocessable
from notifier.storage import idempotency
from notifier.storage.enqueue import idempotency_record

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe write: the same key and body answer 200 with the first "
        "response; the same key with another body answers 409.",
        # Checked by IdempotentRequest, whose message says what a key may be.
        json_schema_extra={"pattern": _KEY.pattern},
    ),
]


class IdempotentRequest:
    def __init__(self, request: Request, *, api_key_id: str, key: str | None, body: Any) -> None:
        """``body`` is the validated request body as JSON values; it is only read when ``key``
        is given, so a caller without a key may pass None and skip dumping it."""
        if key is not None and not _KEY.match(key):
            raise Unprocessable("Idempotency-Key must be 1-255 visible ASCII characters")
        self.api_key_id = api_key_id
        self.key = key
        self.fingerprint = (
            idempotency.request_fingerprint(request.method, request.url.path, body) if key else ""
        )

    async def earlier_response(
        self, connection: AsyncSession | AsyncConnection
    ) -> JSONResponse | None:
        """The first answer to this key, or None if the key is new (or absent)."""
        if self.key is None:
            return None
        record = await idempotency.find(connection, self.api_key_id, self.key)
        if record is None:
            return None
        if record.request_hash != self.fingerprint:
            raise Conflict(
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new request"
            )
        return JSONResponse(record.response_body, status_code=status.HTTP_200_OK)

    def record(self, status_code: int, body: dict[str, Any]) -> dict[str, Any] | None:
        """The record that stores this answer, for the Core insert path (None without a key)."""
        if self.key is None:
            return None
        return idempotency_record(
            api_key_id=self.api_key_id,
            key=self.key,
            request_hash=self.fingerprint,
            status=status_code,
            body=body,
        )

    def remember(self, session: AsyncSession, status_code: int, body: dict[str, Any]) -> None:
        """Store this answer in the caller's transaction (commits or rolls back with it)."""
        if self.key is None:
            return
        idempotency.remember(
            session,
            api_key_id=self.api_key_id,
            key=self.key,
            request_hash=self.fingerprint,
            status=status_code,
            body=body,
        )
