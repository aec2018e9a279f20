"""Idempotency-Key bookkeeping: fingerprint a request, find an earlier answer to it, store one."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from notifier.models.base import utcnow
from notifier.models.idempotency import IdempotencyRecord


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """Two requests are "the same" when method, path and the validated body are equal."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def find(
    connection: AsyncSession | AsyncConnection, api_key_id: str, key: str
) -> Row[tuple[str, dict[str, Any]]] | None:
    """``(request_hash, response_body)`` of the first answer to this key, or None.

    Columns rather than the mapped object, so that the ORM-free enqueue path can ask on a bare
    connection, and the ORM paths (task logs) on their session, with the same query."""
    query = select(IdempotencyRecord.request_hash, IdempotencyRecord.response_body).where(
        IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
    )
    return (await connection.execute(query)).one_or_none()


def remember(
    session: AsyncSession,
    *,
    api_key_id: str,
    key: str,
    request_hash: str,
    status: int,
    body: dict[str, Any],
) -> None:
    """Store an answer in the session's transaction (it commits or rolls back with it)."""
    session.add(
        IdempotencyRecord(
            api_key_id=api_key_id,
            key=key,
            request_hash=request_hash,
            response_status=status,
            response_body=body,
            created_at=utcnow(),
        )
    )
