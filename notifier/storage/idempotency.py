"""Idempotency-Key bookkeeping: fingerprint a request, find an earlier answer to it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.idempotency import IdempotencyRecord


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """Two requests are "the same" when method, path and the validated body are equal."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def find(session: AsyncSession, api_key_id: str, key: str) -> IdempotencyRecord | None:
    query = select(IdempotencyRecord).where(
        IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
    )
    return (await session.execute(query)).scalar_one_or_none()
