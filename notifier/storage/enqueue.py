"""Enqueue without the ORM's unit of work: plain rows from the validated payloads, inserted with
as few round trips as the database allows.

The ORM path built two mapped objects per notification (one per channel more), then flushed them
with per-table ``executemany``; at 1000 per batch that object bookkeeping was most of the
request's time. Here each notification becomes one tuple of column values, its channels one
tuple each, and the API's answer a plain dict — the same values ``Notification.build`` and
``NotificationPublic`` produce (``tests/api/test_enqueue_core.py`` compares them byte for byte).

- PostgreSQL: one statement for everything — notifications and their delivery rows through
  ``INSERT … SELECT * FROM unnest(…)`` (arrays travel in asyncpg's binary format, one parameter
  per column whatever the batch size), the ``Idempotency-Key`` record, and ``pg_notify``. It
  runs on an autocommit connection, so the statement is its own transaction: one round trip,
  committed (and the NOTIFY delivered) before it returns.
- SQLite: ``executemany`` of Core inserts inside the caller's ``BEGIN IMMEDIATE`` transaction;
  the column types are the ORM's own, so what is stored is the same.

``GroupCommit`` writes concurrent single enqueues together: one statement, one commit.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notifier.models.base import utcnow
from notifier.models.idempotency import IdempotencyRecord
from notifier.models.notification import (
    PRIORITY_RANK,
    Channel,
    ChannelStatus,
    Notification,
    NotificationDelivery,
    NotificationStatus,
    NotificationType,
    Priority,
)
from notifier.schemas.notification import NotificationCreate
from notifier.storage.db import is_database_unavailable
from notifier.storage.notifications import DISPATCH_WAKEUP_CHANNEL

_PENDING = NotificationStatus.PENDING.value
_CHANNEL_PENDING = ChannelStatus.PENDING.value
# Member -> plain str. ``Enum.value`` is a descriptor call, slow enough to show in the profile
# of a 1000-row batch; a dict lookup is not. (Equal strings map to equal values.)
_PLAIN: dict[str, str] = {m: m.value for e in (Channel, NotificationType, Priority) for m in e}

# The notification columns that vary per row, in the order of the tuples ``prepare`` builds;
# the others (is_read, status, retry_count, dedupe_key) are the same for every new row.
_COLUMNS = (
    "id",
    "user_id",
    "title",
    "message",
    "notification_type",
    "priority",
    "priority_rank",
    "channels",
    "related_task_id",
    "action_url",
    "notification_metadata",
    "recipient",
    "send_at",
    "expires_at",
    "created_at",
    "next_attempt_at",
    "rendered_parts",
)
_DELIVERY_COLUMNS = ("notification_id", "channel", "updated_at")

# One statement, one implicit transaction. The delivery rows reference notifications inserted
# by the sibling CTE: foreign keys are checked at the end of the whole statement, when both are
# in. JSON columns arrive as text[] and are cast per element (the driver's jsonb codec is not
# applied inside arrays); ``recipient`` of None is the JSON text 'null', which is what the ORM
# stores for it too (a JSON column without none_as_null).
_PG_ROWS = f"""
WITH new_notifications AS (
    INSERT INTO notifications (
        id, user_id, title, message, notification_type, priority, priority_rank, channels,
        is_read, related_task_id, action_url, notification_metadata, recipient, status,
        retry_count, send_at, expires_at, created_at, updated_at, dedupe_key, next_attempt_at,
        rendered_parts)
    SELECT id, user_id, title, message, notification_type, priority, priority_rank,
           channels::jsonb, false, related_task_id, action_url, metadata::jsonb,
           recipient::jsonb, '{_PENDING}', 0, send_at, expires_at, created_at, created_at,
           NULL, next_attempt_at, rendered_parts::jsonb
    FROM unnest(
        CAST(:id AS uuid[]), CAST(:user_id AS text[]), CAST(:title AS text[]),
        CAST(:message AS text[]), CAST(:notification_type AS text[]),
        CAST(:priority AS text[]), CAST(:priority_rank AS smallint[]),
        CAST(:channels AS text[]), CAST(:related_task_id AS text[]),
        CAST(:action_url AS text[]), CAST(:notification_metadata AS text[]),
        CAST(:recipient AS text[]), CAST(:send_at AS timestamptz[]),
        CAST(:expires_at AS timestamptz[]), CAST(:created_at AS timestamptz[]),
        CAST(:next_attempt_at AS timestamptz[]), CAST(:rendered_parts AS text[])
    ) AS t(id, user_id, title, message, notification_type, priority, priority_rank, channels,
           related_task_id, action_url, metadata, recipient, send_at, expires_at, created_at,
           next_attempt_at, rendered_parts)
), new_deliveries AS (
    INSERT INTO notification_deliveries (
        notification_id, channel, status, attempts, attempts_at_requeue, unknown_outcomes,
        updated_at)
    SELECT notification_id, channel, '{_CHANNEL_PENDING}', 0, 0, 0, updated_at
    FROM unnest(
        CAST(:notification_id AS uuid[]), CAST(:channel AS text[]),
        CAST(:updated_at AS timestamptz[])
    ) AS t(notification_id, channel, updated_at)
){{key_cte}}
SELECT pg_notify(:wakeup, '')
"""
# The Idempotency-Key record joins the same statement: a concurrent request with the same key
# fails on the primary key here, and its notifications go with it.
_PG_KEY_CTE = """, new_key AS (
    INSERT INTO idempotency_keys (
        api_key_id, key, request_hash, response_status, response_body, created_at)
    VALUES (:api_key_id, :key, :request_hash, :response_status,
            CAST(:response_body AS jsonb), :key_created_at)
)"""
_PG_INSERT = text(_PG_ROWS.format(key_cte=""))
_PG_INSERT_WITH_KEY = text(_PG_ROWS.format(key_cte=_PG_KEY_CTE))


@dataclass(slots=True)
class PreparedEnqueue:
    """What one request writes: rows as column-ordered tuples, and the API's answer per row."""

    notifications: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    public: list[dict[str, Any]] = field(default_factory=list)

    @property
    def user_ids(self) -> list[str]:
        return [row[1] for row in self.notifications]


def _json_text(value: Any) -> str:
    # Most rows have no metadata and no recipient: skip the encoder for those.
    if value is None:
        return "null"
    if value == {}:
        return "{}"
    return json.dumps(value)


def _json_time(value: datetime | None) -> str | None:
    # Exactly what NotificationPublic's AwareDatetime fields dump to ("Z" for UTC).
    return None if value is None else str(to_jsonable_python(value))


def prepare(
    payloads: Sequence[NotificationCreate],
    rendered_parts: Sequence[dict[str, str] | None] | None = None,
) -> PreparedEnqueue:
    """Rows and answers for ``payloads``, with the values ``Notification.build`` would set.

    ``rendered_parts``, one per payload: the channel parts of a rendered template, stored with
    the notification so that a retry sends what the first attempt did (docs/architecture.md,
    "Templates")."""
    prepared = PreparedEnqueue()
    for index, payload in enumerate(payloads):
        now = utcnow()  # per row, as Notification.build does: batch order shows in created_at
        ident = uuid.uuid4()
        channels = list(dict.fromkeys(payload.channels))  # plain names (a registered channel)
        priority = payload.priority
        send_at, expires_at = payload.send_at, payload.expires_at
        recipient = payload.recipient.model_dump(exclude_none=True) if payload.recipient else None
        prepared.notifications.append(
            (
                ident,
                payload.user_id,
                payload.title,
                payload.message,
                _PLAIN[payload.notification_type],
                _PLAIN[priority],
                PRIORITY_RANK[priority],
                channels,
                payload.related_task_id,
                payload.action_url,
                payload.metadata,
                recipient,
                send_at,
                expires_at,
                now,
                max(send_at, now) if send_at else now,
                rendered_parts[index] if rendered_parts is not None else None,
            )
        )
        prepared.deliveries.extend((ident, channel, now) for channel in channels)
        stamp = _json_time(now)
        prepared.public.append(
            {
                "id": str(ident),
                "user_id": payload.user_id,
                "title": payload.title,
                "message": payload.message,
                "notification_type": _PLAIN[payload.notification_type],
                "priority": _PLAIN[priority],
                "channels": channels,
                "is_read": False,
                "read_at": None,
                "related_task_id": payload.related_task_id,
                "action_url": payload.action_url,
                "metadata": payload.metadata,
                "status": _PENDING,
                "delivery_status": {
                    channel: {
                        "status": _CHANNEL_PENDING,
                        "attempts": 0,
                        "last_error": None,
                        "provider_id": None,
                        "next_attempt_at": None,
                        "updated_at": stamp,
                    }
                    for channel in channels
                },
                "retry_count": 0,
                "send_at": _json_time(send_at),
                "expires_at": _json_time(expires_at),
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    return prepared


def idempotency_record(
    *, api_key_id: str, key: str, request_hash: str, status: int, body: dict[str, Any]
) -> dict[str, Any]:
    """The ``idempotency_keys`` row that stores this answer, for ``insert_prepared``."""
    return {
        "api_key_id": api_key_id,
        "key": key,
        "request_hash": request_hash,
        "response_status": status,
        "response_body": body,
        "created_at": utcnow(),
    }


@asynccontextmanager
async def write_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for one enqueue.

    PostgreSQL: autocommit, so each statement is its own transaction and ``insert_prepared``'s
    single statement costs one round trip (no BEGIN/COMMIT). SQLite: the block is one
    ``BEGIN IMMEDIATE`` transaction (see storage/db.py), committed when it ends.
    """
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")
        else:
            async with connection.begin():
                yield connection


async def insert_prepared(
    connection: AsyncConnection,
    prepared: PreparedEnqueue,
    *,
    record: dict[str, Any] | None = None,
) -> None:
    """Insert the rows, their delivery rows and ``record``, and wake the dispatchers.

    Raises IntegrityError when ``record``'s key is taken (by a request that committed first).
    """
    if connection.dialect.name == "postgresql":
        await _insert_postgres(connection, prepared, record)
    else:
        await _insert_sqlite(connection, prepared, record)


async def _insert_postgres(
    connection: AsyncConnection, prepared: PreparedEnqueue, record: dict[str, Any] | None
) -> None:
    columns = list(zip(*prepared.notifications, strict=True))
    params: dict[str, Any] = dict(zip(_COLUMNS, columns, strict=True))
    for name in ("channels", "notification_metadata", "recipient"):
        params[name] = [_json_text(value) for value in params[name]]
    # SQL NULL when absent, as the ORM writes it (the column is none_as_null).
    params["rendered_parts"] = [
        None if value is None else json.dumps(value) for value in params["rendered_parts"]
    ]
    params.update(zip(_DELIVERY_COLUMNS, zip(*prepared.deliveries, strict=True), strict=True))
    params["wakeup"] = DISPATCH_WAKEUP_CHANNEL
    statement = _PG_INSERT
    if record is not None:
        statement = _PG_INSERT_WITH_KEY
        params.update(record)
        params["response_body"] = json.dumps(record["response_body"])
        params["key_created_at"] = params.pop("created_at")
        params["created_at"] = columns[_COLUMNS.index("created_at")]
    await connection.execute(statement, params)


async def _insert_sqlite(
    connection: AsyncConnection, prepared: PreparedEnqueue, record: dict[str, Any] | None
) -> None:
    # Core inserts through the ORM's own table and column types (UUID as hex, UTC datetimes,
    # JSON text), so a row reads back exactly as one the ORM wrote.
    constant = {
        "is_read": False,
        "status": _PENDING,
        "retry_count": 0,
        "dedupe_key": None,
    }
    rows = []
    for values in prepared.notifications:
        row = dict(zip(_COLUMNS, values, strict=True))
        row["updated_at"] = row["created_at"]
        rows.append(row | constant)
    await connection.execute(insert(Notification), rows)
    await connection.execute(
        insert(NotificationDelivery),
        [
            {
                "notification_id": ident,
                "channel": channel,
                "status": _CHANNEL_PENDING,
                "attempts": 0,
                "attempts_at_requeue": 0,
                "unknown_outcomes": 0,
                "updated_at": now,
            }
            for ident, channel, now in prepared.deliveries
        ],
    )
    if record is not None:
        await connection.execute(insert(IdempotencyRecord), [record])


def merge(parts: Sequence[PreparedEnqueue]) -> PreparedEnqueue:
    merged = PreparedEnqueue()
    for part in parts:
        merged.notifications += part.notifications
        merged.deliveries += part.deliveries
        merged.public += part.public
    return merged


# A waiting enqueue: its rows, and the future its caller awaits.
_Member = tuple[PreparedEnqueue, "asyncio.Future[None]"]


class GroupCommit:
    """Concurrent enqueues share one statement and one commit.

    Under load every single enqueue paid for a pool checkout (with its pre-ping), a statement
    and a commit (a WAL flush) of its own, and with 64 concurrent producers most of a
    request's time was spent waiting for a pooled connection. Here the first request that
    arrives starts a writer (up to ``writers`` of them, so that one group is sent while another
    commits); requests that arrive while they write form the next group, written as one
    ``insert_prepared`` by the first writer free. So at most ``writers`` statements are in
    flight per process, and groups grow with the load.

    Each caller awaits the commit of the group it joined, so its 202 still means committed.
    If a group fails for any reason but the database being unavailable, its members are
    written again one by one, so that one request's bad row fails that request alone.
    Requests with an ``Idempotency-Key`` are not grouped: their key conflict is an error of
    their own statement, reported to them alone.
    """

    def __init__(self, engine: AsyncEngine, *, max_rows: int = 1000, writers: int = 2) -> None:
        self.engine = engine
        self.groups_written = 0  # for tests and curiosity: how much grouping happened
        self._max_rows = max_rows
        self._waiting: deque[_Member] = deque()
        self._max_writers = writers
        self._writers: set[asyncio.Task[None]] = set()

    async def insert(self, prepared: PreparedEnqueue) -> None:
        """Insert ``prepared`` with whatever else is waiting; returns once it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((prepared, future))
        if len(self._writers) < self._max_writers:
            self._writers.add(asyncio.create_task(self._write_groups()))
        await future

    async def _write_groups(self) -> None:
        try:
            while self._waiting:
                group: list[_Member] = []
                rows = 0
                while self._waiting and (not group or rows < self._max_rows):
                    member = self._waiting.popleft()
                    group.append(member)
                    rows += len(member[0].notifications)
                await self._write(group)
        finally:
            # No await between the loop's last check and here: a caller that comes later finds
            # a free writer slot and starts one.
            task = asyncio.current_task()
            if task is not None:
                self._writers.discard(task)

    async def _write(self, group: list[_Member]) -> None:
        try:
            async with write_connection(self.engine) as connection:
                await insert_prepared(connection, merge([prepared for prepared, _ in group]))
            self.groups_written += 1
        except Exception as exc:
            if len(group) > 1 and not is_database_unavailable(exc):
                for member in group:
                    await self._write([member])
                return
            for _, future in group:
                if not future.done():  # its caller may have been cancelled meanwhile
                    future.set_exception(exc)
            return
        for _, future in group:
            if not future.done():
                future.set_result(None)
