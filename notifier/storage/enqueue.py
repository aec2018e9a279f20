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

- PostgreSQL: one statement for everything (``storage/enqueue_sql.py``) — notifications and
  their delivery rows through ``INSERT … SELECT * FROM unnest(…)`` (arrays travel in asyncpg's
  binary format, one parameter per column whatever the batch size), the ``Idempotency-Key``
  record, the websocket fast path's transitions and frames, and ``pg_notify``. It runs on an
  autocommit connection, so the statement is its own transaction: one round trip, committed
  (and the NOTIFYs delivered) before it returns. It runs on the asyncpg connection under the
  SQLAlchemy one (``_on_driver``, ``storage/driver.py``).
- SQLite: ``executemany`` of Core inserts inside the caller's ``BEGIN IMMEDIATE`` transaction;
  the column types are the ORM's own, so what is stored is the same.

With ``websocket_grace`` > 0 the websocket channel takes the fast path
(``storage/websocket_fast_path.py``): written ``sent``, its frame in ``PreparedEnqueue.frames``
for the API to deliver right after the commit.

``GroupCommit`` writes concurrent single enqueues together: one statement, one commit.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import TextClause

from notifier.models.base import utcnow
from notifier.models.idempotency import IdempotencyRecord
from notifier.models.notification import (
    Channel,
    Notification,
    NotificationDelivery,
    NotificationType,
    Priority,
    new_delivery_values,
    new_row_values,
)
from notifier.models.recipient import Recipient
from notifier.models.shape import DELIVERY_PUBLIC_FIELDS, api_time, reader
from notifier.storage import websocket_fast_path as fast_path
from notifier.storage.driver import after_failure, positional
from notifier.storage.enqueue_sql import FAST_PATH_REFUSED, pg_insert
from notifier.storage.transitions import record_transitions
from notifier.storage.websocket_fast_path import OPTED_OUT_SQL, FrameNotify

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


@dataclass(slots=True)
class PreparedEnqueue:
    """What one request writes: every column of each row by name, and the API's answer per
    row."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    public: list[dict[str, Any]] = field(default_factory=list)
    # The websocket fast path: its rows' indexes in ``notifications`` (their transitions follow
    # from the rows: ``websocket_fast_path.transitions_json``), and the frames to deliver once
    # committed ((user id, frame), in row order).
    fast: list[int] = field(default_factory=list)

    @property
    def frames(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (self.notifications[i]["user_id"], fast_path.frame_of(self.public[i]))
            for i in self.fast
        ]

    @property
    def fast_rows(self) -> list[dict[str, Any]]:
        return [self.notifications[i] for i in self.fast]

    @property
    def user_ids(self) -> list[str]:
        return [row["user_id"] for row in self.notifications]


# The API's answer, read off the row's values (models/shape.py).
_PUBLIC = reader(by_key=True)
# A new channel's entry in ``delivery_status``, from the constants of a new delivery row.
_NEW_CHANNEL_PUBLIC = reader(DELIVERY_PUBLIC_FIELDS, names=(), by_key=True)(
    new_delivery_values(uuid.UUID(int=0), "", utcnow())
)


def prepare(
    payloads: Sequence[NewNotification],
    rendered_parts: Sequence[dict[str, str] | None] | None = None,
    *,
    websocket_grace: float = 0.0,
) -> PreparedEnqueue:
    """Rows and answers for ``payloads``: the row ``Notification.build`` makes
    (``new_row_values``), and its public dict (``models/shape.py``).

    ``rendered_parts``, one per payload: the channel parts of a rendered template, stored with
    the notification so that a retry sends what the first attempt did (docs/architecture.md,
    "Templates"). ``websocket_grace`` > 0: the websocket fast path, the frame republished by the
    worker after that many seconds if nobody acked it (module docstring)."""
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
        if websocket_grace > 0 and fast_path.eligible(row):
            fast_path.mark_sent(row, deliveries, grace=websocket_grace, now=now)
            prepared.fast.append(index)
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
    frame_notify: FrameNotify | None = None,
    driver: asyncpg.Connection | None = None,
) -> None:
    """Insert the rows, their delivery rows and ``record``, and wake the dispatchers; with the
    websocket fast path, its transitions too, and its frames NOTIFYed through ``frame_notify``
    (PostgreSQL's fan-out) with the commit. A recipient who opted out of websocket gets the
    plain enqueue instead (``websocket_fast_path.fall_back``): ``prepared`` says what was
    written, its ``frames`` what is left for the caller to deliver.

    ``driver``: the asyncpg connection under ``connection``, when the caller holds it already
    (``driver.HeldConnections``); otherwise it is looked up.

    Raises IntegrityError when ``record``'s key is taken (by a request that committed first).
    """
    if connection.dialect.name == "postgresql":
        if driver is None:
            driver = (await connection.get_raw_connection()).driver_connection
        await _insert_postgres(connection, driver, prepared, record, frame_notify)
    else:
        await _insert_sqlite(connection, prepared, record)


async def _insert_postgres(
    connection: AsyncConnection,
    driver: asyncpg.Connection,
    prepared: PreparedEnqueue,
    record: dict[str, Any] | None,
    frame_notify: FrameNotify | None,
) -> None:
    statement, params = pg_statement(prepared, record, frame_notify)
    try:
        await _on_driver(connection, driver, statement, params)
    except DBAPIError as exc:
        if FAST_PATH_REFUSED not in str(exc.orig):
            raise
        # Nothing was written (the statement is its transaction). Rare: an opted-out recipient.
        fast = {name: params[name] for name in ("f_id", "f_user_id", "f_type")}
        found = await connection.execute(_OPTED_OUT, fast)
        _fall_back(prepared, {row[0] for row in found})
        await _on_driver(connection, driver, *pg_statement(prepared, record, frame_notify))


_OPTED_OUT = text(OPTED_OUT_SQL)


@functools.cache
def _positional(statement: TextClause) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    # One of ``enqueue_sql``'s few statements, compiled once for the driver.
    return positional(statement)


async def _on_driver(
    connection: AsyncConnection,
    driver: asyncpg.Connection,
    statement: TextClause,
    params: dict[str, Any],
) -> None:
    """``statement`` as fixed SQL text on the asyncpg connection under ``connection`` (which
    prepares it once per connection, as the worker's claim and flush do: storage/driver.py):
    SQLAlchemy's execution path cost as much of the write's CPU as the rest of it. A failure
    is raised as SQLAlchemy's error (``after_failure``), for ``db.classify``, the
    ``Idempotency-Key`` conflict's ``IntegrityError`` and the fast path's refusal."""
    sql, names, fixed = _positional(statement)
    args = [params[name] if name in params else fixed[name] for name in names]
    try:
        await driver.execute(sql, *args)
    except BaseException as exc:
        converted = await after_failure(connection, driver, exc)
        if converted is exc:
            raise
        raise converted from exc


def pg_statement(
    prepared: PreparedEnqueue, record: dict[str, Any] | None, frame_notify: FrameNotify | None
) -> tuple[TextClause, dict[str, Any]]:
    """``prepared``'s statement and parameters (``enqueue_sql.pg_insert``)."""
    return pg_insert(
        prepared.notifications,
        prepared.deliveries,
        record=record,
        fast_rows=prepared.fast_rows,
        frames=prepared.frames if frame_notify is not None else [],
        frame_notify=frame_notify,
    )


def _fall_back(prepared: PreparedEnqueue, ids: set[uuid.UUID]) -> None:
    """The rows of ``ids`` leave the fast path: written as a plain enqueue writes them."""
    if not ids:
        return
    channels: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for delivery in prepared.deliveries:
        channels.setdefault(delivery["notification_id"], []).append(delivery)
    kept = []
    for index in prepared.fast:
        row = prepared.notifications[index]
        if row["id"] in ids:
            fast_path.fall_back(row, channels[row["id"]], prepared.public[index])
        else:
            kept.append(index)
    prepared.fast = kept


async def _insert_sqlite(
    connection: AsyncConnection, prepared: PreparedEnqueue, record: dict[str, Any] | None
) -> None:
    if prepared.fast:
        # In the caller's BEGIN IMMEDIATE transaction: no preference changes in between.
        rows = prepared.fast_rows
        found = await connection.execute(
            select(Recipient.user_id, Recipient.preferences).where(
                Recipient.user_id.in_({row["user_id"] for row in rows})
            )
        )
        preferences: dict[str, dict[str, Any]] = {user: prefs for user, prefs in found}
        _fall_back(
            prepared,
            {
                row["id"]
                for row in rows
                if fast_path.opted_out(preferences.get(row["user_id"]), row["notification_type"])
            },
        )
    # Core inserts through the ORM's own table and column types (UUID as hex, UTC datetimes,
    # JSON text), so a row reads back exactly as one the ORM wrote.
    await connection.execute(insert(Notification), prepared.notifications)
    await connection.execute(insert(NotificationDelivery), prepared.deliveries)
    if record is not None:
        await connection.execute(insert(IdempotencyRecord), [record])
    await record_transitions(
        connection, fast_path.transition_records(prepared.fast_rows, prepared.deliveries)
    )
