"""Enqueue without the ORM's unit of work: plain rows from the validated payloads, inserted with
as few round trips as the database allows.

The ORM path built two mapped objects per notification (one per channel more), then flushed them
with per-table ``executemany``; at 1000 per batch that object bookkeeping was most of the
request's time. Here each notification becomes one dict of column values
(``new_row_values``, which ``Notification.build`` uses too), its channels one each, and the
API's answer a plain dict made by ``models/shape.py`` — what ``NotificationPublic`` produces
(``tests/api/test_enqueue_core.py`` compares them byte for byte). The insert's columns are read
from the tables, so a new column needs no edit here (docs/architecture.md, "Notification
shape").

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

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import Column, insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notifier.coalescer import Coalescer, OnFailure
from notifier.models.base import utcnow
from notifier.models.idempotency import IdempotencyRecord
from notifier.models.notification import (
    NEW_DELIVERY_CONSTANTS,
    NEW_ROW_CONSTANTS,
    Channel,
    Notification,
    NotificationDelivery,
    NotificationType,
    Priority,
    new_delivery_values,
    new_row_values,
)
from notifier.models.shape import DELIVERY_PUBLIC_FIELDS, api_time, reader
from notifier.storage.db import is_database_unavailable
from notifier.storage.notifications import DISPATCH_WAKEUP_CHANNEL

# Member -> plain str. ``Enum.value`` is a descriptor call, slow enough to show in the profile
# of a 1000-row batch; a dict lookup is not. (Equal strings map to equal values.)
_PLAIN: dict[str, str] = {m: m.value for e in (Channel, NotificationType, Priority) for m in e}


class _Dumpable(Protocol):
    def model_dump(self, *, exclude_none: bool) -> dict[str, Any]: ...


class NewNotification(Protocol):
    """What the enqueue reads of one validated request (the API's ``NotificationCreate``;
    storage speaks plain values, not the API's models)."""

    @property
    def user_id(self) -> str: ...
    # None only before a template is rendered: the enqueue takes rendered requests.
    @property
    def title(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def notification_type(self) -> str: ...
    @property
    def priority(self) -> Priority: ...
    @property
    def channels(self) -> Sequence[str]: ...
    @property
    def related_task_id(self) -> str | None: ...
    @property
    def action_url(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def recipient(self) -> _Dumpable | None: ...
    @property
    def send_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def cancellation_key(self) -> str | None: ...
    # {"digest": …, "throttle": …, "escalation": [{"after_seconds", "channels", "unless"}]}
    @property
    def delivery_plan(self) -> dict[str, Any] | None: ...


# The statement is derived from the tables: every column that varies per row travels as one
# array (``unnest``), every column in ``NEW_*_CONSTANTS`` is a literal. Bind names carry a
# prefix, since both tables have an ``updated_at``.
_PG_ARRAY_OF = {
    "UUID": "uuid[]",
    "VARCHAR": "text[]",
    "TEXT": "text[]",
    "SMALLINT": "smallint[]",
    "INTEGER": "integer[]",
    "BOOLEAN": "boolean[]",
    "TIMESTAMP WITH TIME ZONE": "timestamptz[]",
    # JSON arrives as text[] and is cast per element: the driver's jsonb codec is not applied
    # inside arrays. ``recipient`` of None is the JSON text 'null', as the ORM stores it.
    "JSONB": "text[]",
}


def _pg_type(column: Column[Any]) -> str:
    compiled: str = column.type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return compiled.split("(")[0]


def _literal(value: Any) -> str:
    # Only our own constants come here (NEW_*_CONSTANTS), never a user's value.
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _varying(table: Any, constants: dict[str, Any]) -> tuple[Column[Any], ...]:
    return tuple(c for c in table.columns if c.name not in constants)


_ROW_COLUMNS = _varying(Notification.__table__, NEW_ROW_CONSTANTS)
_DELIVERY_COLUMNS = _varying(NotificationDelivery.__table__, NEW_DELIVERY_CONSTANTS)
_JSON_COLUMNS = tuple(c.name for c in _ROW_COLUMNS if _pg_type(c) == "JSONB")
# JSON columns whose None is SQL NULL (``none_as_null``), as the ORM writes them.
_NULL_JSON = frozenset(c.name for c in _ROW_COLUMNS if getattr(c.type, "none_as_null", False))
_ROW_PARAMS = tuple(f"n_{c.name}" for c in _ROW_COLUMNS)
_ROW_VALUES = itemgetter(*(c.name for c in _ROW_COLUMNS))
_DELIVERY_PARAMS = tuple(f"d_{c.name}" for c in _DELIVERY_COLUMNS)
_DELIVERY_VALUES = itemgetter(*(c.name for c in _DELIVERY_COLUMNS))


def _selected(column: Column[Any], constants: dict[str, Any]) -> str:
    if column.name in constants:
        return _literal(constants[column.name])
    return f"t.{column.name}::jsonb" if _pg_type(column) == "JSONB" else f"t.{column.name}"


def _insert_from_arrays(
    table: Any, varying: tuple[Column[Any], ...], constants: dict[str, Any], prefix: str
) -> str:
    names = ", ".join(c.name for c in table.columns)
    values = ", ".join(_selected(c, constants) for c in table.columns)
    arrays = ", ".join(f"CAST(:{prefix}{c.name} AS {_PG_ARRAY_OF[_pg_type(c)]})" for c in varying)
    aliases = ", ".join(c.name for c in varying)
    return (
        f"INSERT INTO {table.name} ({names})\n"
        f"    SELECT {values}\n"
        f"    FROM unnest({arrays}) AS t({aliases})"
    )


_INSERT_ROWS = _insert_from_arrays(Notification.__table__, _ROW_COLUMNS, NEW_ROW_CONSTANTS, "n_")
_INSERT_DELIVERIES = _insert_from_arrays(
    NotificationDelivery.__table__, _DELIVERY_COLUMNS, NEW_DELIVERY_CONSTANTS, "d_"
)

# One statement, one implicit transaction. The delivery rows reference notifications inserted
# by the sibling CTE: foreign keys are checked at the end of the whole statement, when both are
# in.
_PG_ROWS = f"""
WITH new_notifications AS (
    {_INSERT_ROWS}
), new_deliveries AS (
    {_INSERT_DELIVERIES}
){{key_cte}}
SELECT pg_notify(:wakeup, '')
"""
# The Idempotency-Key record joins the same statement: a concurrent request with the same key
# fails on the primary key here, and its notifications go with it.
_PG_KEY_CTE = """, new_key AS (
    INSERT INTO idempotency_keys (
        api_key_id, key, request_hash, response_status, response_body, created_at)
    VALUES (:api_key_id, :key, :request_hash, :response_status,
            CAST(:response_body AS jsonb), :created_at)
)"""
_PG_INSERT = text(_PG_ROWS.format(key_cte=""))
_PG_INSERT_WITH_KEY = text(_PG_ROWS.format(key_cte=_PG_KEY_CTE))


@dataclass(slots=True)
class PreparedEnqueue:
    """What one request writes: every column of each row by name, and the API's answer per
    row."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    public: list[dict[str, Any]] = field(default_factory=list)

    @property
    def user_ids(self) -> list[str]:
        return [row["user_id"] for row in self.notifications]


def _json_text(value: Any) -> str:
    # Most rows have no metadata and no recipient: skip the encoder for those.
    if value is None:
        return "null"
    if value == {}:
        return "{}"
    return json.dumps(value)


# The API's answer, read off the row's values (models/shape.py).
_PUBLIC = reader(by_key=True)
# A new channel's entry in ``delivery_status``, from the constants of a new delivery row.
_NEW_CHANNEL_PUBLIC = reader(DELIVERY_PUBLIC_FIELDS, names=(), by_key=True)(
    new_delivery_values(uuid.UUID(int=0), "", utcnow())
)


def prepare(
    payloads: Sequence[NewNotification],
    rendered_parts: Sequence[dict[str, str] | None] | None = None,
) -> PreparedEnqueue:
    """Rows and answers for ``payloads``: the row ``Notification.build`` makes
    (``new_row_values``), and its public dict (``models/shape.py``).

    ``rendered_parts``, one per payload: the channel parts of a rendered template, stored with
    the notification so that a retry sends what the first attempt did (docs/architecture.md,
    "Templates")."""
    prepared = PreparedEnqueue()
    for index, payload in enumerate(payloads):
        now = utcnow()  # per row, as Notification.build does: batch order shows in created_at
        ident = uuid.uuid4()
        channels = list(dict.fromkeys(payload.channels))  # plain names (a registered channel)
        recipient = payload.recipient.model_dump(exclude_none=True) if payload.recipient else None
        title, message = payload.title, payload.message
        plan = payload.delivery_plan
        if title is None or message is None:
            raise ValueError("enqueue of a request whose template was not rendered")
        row = new_row_values(
            ident=ident,
            user_id=payload.user_id,
            title=title,
            message=message,
            notification_type=_PLAIN[payload.notification_type],
            priority=payload.priority,
            channels=channels,
            related_task_id=payload.related_task_id,
            action_url=payload.action_url,
            metadata=payload.metadata,
            recipient=recipient,
            send_at=payload.send_at,
            expires_at=payload.expires_at,
            dedupe_key=None,
            now=now,
            rendered_parts=rendered_parts[index] if rendered_parts is not None else None,
            cancellation_key=payload.cancellation_key,
            delivery_plan=plan,
        )
        deliveries = [new_delivery_values(ident, channel, now) for channel in channels]
        prepared.notifications.append(row)
        # Every new channel's entry is the same but for its time: one dict per row.
        channel_public = {**_NEW_CHANNEL_PUBLIC, "updated_at": api_time(now)}
        row["delivery_status"] = dict.fromkeys(channels, channel_public)
        if plan is not None and plan.get("escalation"):
            _add_escalation_steps(row, deliveries, plan["escalation"], now)
        prepared.deliveries += deliveries
        prepared.public.append(_PUBLIC(row))
        del row["delivery_status"]  # not a column
    return prepared


def _add_escalation_steps(
    row: dict[str, Any],
    deliveries: list[dict[str, Any]],
    steps: list[dict[str, Any]],
    now: datetime,
) -> None:
    """An escalation step's channels exist from enqueue: ``pending``, due at the step's time
    (the worker sends a channel only once its ``next_attempt_at`` has come), and skipped in
    the transaction that marks the notification seen or read (docs/architecture.md, "Digest,
    throttle and escalation")."""
    for step in steps:
        due = now + timedelta(seconds=step["after_seconds"])
        for channel in step["channels"]:
            delivery = new_delivery_values(row["id"], channel, now)
            delivery["next_attempt_at"] = due
            deliveries.append(delivery)
            row["delivery_status"][channel] = {
                **_NEW_CHANNEL_PUBLIC,
                "next_attempt_at": api_time(due),
                "updated_at": api_time(now),
            }


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
    # Rows to columns in C: one itemgetter call per row, one zip for the lot.
    params: dict[str, Any] = dict(
        zip(_ROW_PARAMS, zip(*map(_ROW_VALUES, prepared.notifications), strict=True), strict=True)
    )
    for name in _JSON_COLUMNS:
        keep_null = name in _NULL_JSON
        params[f"n_{name}"] = [
            None if value is None and keep_null else _json_text(value)
            for value in params[f"n_{name}"]
        ]
    params.update(
        zip(
            _DELIVERY_PARAMS,
            zip(*map(_DELIVERY_VALUES, prepared.deliveries), strict=True),
            strict=True,
        )
    )
    params["wakeup"] = DISPATCH_WAKEUP_CHANNEL
    statement = _PG_INSERT
    if record is not None:
        statement = _PG_INSERT_WITH_KEY
        params.update(record)
        params["response_body"] = json.dumps(record["response_body"])
    await connection.execute(statement, params)


async def _insert_sqlite(
    connection: AsyncConnection, prepared: PreparedEnqueue, record: dict[str, Any] | None
) -> None:
    # Core inserts through the ORM's own table and column types (UUID as hex, UTC datetimes,
    # JSON text), so a row reads back exactly as one the ORM wrote.
    await connection.execute(insert(Notification), prepared.notifications)
    await connection.execute(insert(NotificationDelivery), prepared.deliveries)
    if record is not None:
        await connection.execute(insert(IdempotencyRecord), [record])


def merge(parts: Sequence[PreparedEnqueue]) -> PreparedEnqueue:
    merged = PreparedEnqueue()
    for part in parts:
        merged.notifications += part.notifications
        merged.deliveries += part.deliveries
        merged.public += part.public
    return merged


class GroupCommit:
    """Concurrent enqueues share one statement and one commit.

    Under load every single enqueue paid for a pool checkout (with its pre-ping), a statement
    and a commit (a WAL flush) of its own, and with 64 concurrent producers most of a
    request's time was spent waiting for a pooled connection. Here (``notifier/coalescer.py``)
    the first request that arrives is written at once, by one of up to ``writers`` writers (so
    that one group is sent while another commits); requests that arrive meanwhile form the next
    group, up to ``max_rows`` notifications, written as one ``insert_prepared``. So at most
    ``writers`` statements are in flight per process, and groups grow with the load.

    Each caller awaits the commit of the group it joined, so its 202 still means committed.
    If a group fails for any reason but the database being unavailable, it is split in halves
    down to the request at fault, so that one request's bad row fails that request alone.
    Requests with an ``Idempotency-Key`` are not grouped: their key conflict is an error of
    their own statement, reported to them alone.
    """

    def __init__(self, engine: AsyncEngine, *, max_rows: int = 1000, writers: int = 2) -> None:
        self.engine = engine
        self._coalescer: Coalescer[PreparedEnqueue, None] = Coalescer(
            self._write,
            max_batch=max_rows,
            weight=lambda prepared: len(prepared.notifications),
            concurrency=writers,
            on_failure=_split_unless_unavailable,
        )

    @property
    def groups_written(self) -> int:
        """For tests and curiosity: how much grouping happened."""
        return self._coalescer.batches_handled

    async def insert(self, prepared: PreparedEnqueue) -> None:
        """Insert ``prepared`` with whatever else is waiting; returns once it is committed."""
        await self._coalescer.submit(prepared)

    async def _write(self, group: list[PreparedEnqueue]) -> list[None]:
        async with write_connection(self.engine) as connection:
            await insert_prepared(connection, merge(group))
        return [None] * len(group)


def _split_unless_unavailable(exc: Exception) -> OnFailure:
    # An outage fails every request of the group alike: splitting it would only repeat it.
    return OnFailure.FAIL if is_database_unavailable(exc) else OnFailure.SPLIT
