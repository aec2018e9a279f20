"""``outcome_batch``'s rows and its PostgreSQL statements: lock and load a batch's
notifications, write them back with the record of their transitions and webhook events.

A worker's outcome flush runs on the asyncpg connection itself (``driver``: SQLAlchemy's
execution path cost more than the statements), fixed SQL text that asyncpg prepares once per
connection. Four round trips a flush (they were five):

1. ``BEGIN`` and the lock, ``SELECT … ORDER BY id FOR UPDATE``, in one simple-protocol query
   (the ids are UUIDs, written into the text: no parameters, so no prepared statement);
2. the rows and their channels, in a statement of its own after the lock, so that under READ
   COMMITTED it sees every write committed by whoever held a lock before us (see
   ``dispatch``'s docstring);
3. the write-back (``WRITE_BACK``): both tables, the transitions and their webhook events,
   ``notification.settled`` included, in one statement;
4. ``COMMIT``.

``settle_externally`` runs the same statements through the caller's SQLAlchemy transaction
(``exec_driver_sql``: the same positional SQL text).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.lifecycle.statuses import FINISHED
from notifier.storage.driver import json_rows, positional
from notifier.storage.transitions import (
    SETTLED_KIND,
    TransitionRecord,
    pg_record_after,
    pg_record_params,
)


@dataclass(slots=True)
class LockedChannel:
    """One ``notification_deliveries`` row (a ``machine.ChannelState``)."""

    notification_id: uuid.UUID
    channel: str
    status: str
    attempts: int
    last_error: str | None
    provider_id: str | None
    unknown_outcomes: int
    next_attempt_at: datetime | None
    updated_at: datetime
    changed: bool = False


@dataclass(slots=True)
class LockedRow:
    """One locked ``notifications`` row and its channels (a
    ``transitions.TrackedNotification``)."""

    id: uuid.UUID
    user_id: str
    send_at: datetime | None
    created_at: datetime
    status: str
    retry_count: int
    updated_at: datetime
    expires_at: datetime | None
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    deliveries: list[LockedChannel] = field(default_factory=list)
    changed: bool = False


_ROW_COLUMNS = (
    "n.id, n.user_id, n.send_at, n.created_at, n.status, n.retry_count, n.updated_at, "
    "n.expires_at, n.next_attempt_at, n.lease_owner, n.lease_expires_at"
)
_CHANNEL_COLUMNS = (
    "d.notification_id, d.channel, d.status, d.attempts, d.last_error, d.provider_id, "
    "d.unknown_outcomes, d.next_attempt_at, d.updated_at"
)
_ROW_WIDTH = _ROW_COLUMNS.count(",") + 1

# After the lock: the rows with their channels, one statement (a row per channel).
LOAD = f"""SELECT {_ROW_COLUMNS}, {_CHANNEL_COLUMNS}
FROM notifications AS n LEFT JOIN notification_deliveries AS d ON d.notification_id = n.id
WHERE n.id = ANY($1::uuid[]) ORDER BY n.id"""


def lock_sql(ids: Sequence[uuid.UUID]) -> str:
    """The lock, in id order, so that two batches (or a batch and a lease renewal) cannot
    deadlock over the same rows. The ids go into the text as their ``hex``: only hex digits
    (and an ``AttributeError`` for anything that is not a ``uuid.UUID``)."""
    listed = ",".join(i.hex for i in ids)
    return (
        f"SELECT 1 FROM notifications WHERE id = ANY('{{{listed}}}'::uuid[]) ORDER BY id FOR UPDATE"
    )


async def lock_and_load(
    connection: AsyncConnection, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, LockedRow]:
    """The lock and the load in the caller's transaction (``settle_externally``)."""
    await connection.exec_driver_sql(lock_sql(ids))
    return rows_from((await connection.exec_driver_sql(LOAD, (list(ids),))).all())


def rows_from(records: Sequence[Sequence[Any]]) -> dict[uuid.UUID, LockedRow]:
    rows: dict[uuid.UUID, LockedRow] = {}
    for record in records:
        row = rows.get(record[0])
        if row is None:
            row = rows[record[0]] = LockedRow(*record[:_ROW_WIDTH])
        if record[_ROW_WIDTH] is not None:  # a row without channels (none in practice)
            row.deliveries.append(LockedChannel(*record[_ROW_WIDTH:]))
    return rows


# ``iso`` (``models.base``: Python's isoformat of a UTC datetime) in SQL, for the settled
# event's ``delivery_status``: microseconds only when there are some, as Python writes them.
def _iso(column: str) -> str:
    return (
        f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE "
        f"WHEN to_char({column}, 'US') = '000000' THEN '' ELSE to_char({column}, '.US') END "
        "|| '+00:00'"
    )


# Both tables from one JSON parameter each (``driver.json_rows`` says why not arrays), as
# data-modifying CTEs, which PostgreSQL runs whether or not the main statement reads them; then
# the transitions and their events.
_WRITE_CTES = """
channels AS (
    UPDATE notification_deliveries AS d
    SET status = v->>2, attempts = CAST(v->>3 AS int), last_error = v->>4,
        provider_id = v->>5, unknown_outcomes = CAST(v->>6 AS int),
        next_attempt_at = CAST(v->>7 AS timestamptz), updated_at = CAST(v->>8 AS timestamptz)
    FROM jsonb_array_elements(CAST(:channels AS jsonb)) AS v
    WHERE d.notification_id = CAST(v->>0 AS uuid) AND d.channel = v->>1
    RETURNING d.notification_id, d.channel, d.status, d.attempts, d.last_error,
              d.provider_id, d.next_attempt_at, d.updated_at
), notified AS (
    UPDATE notifications AS n
    SET status = v->>1, retry_count = CAST(v->>2 AS int),
        updated_at = CAST(v->>3 AS timestamptz), next_attempt_at = CAST(v->>4 AS timestamptz),
        lease_owner = v->>5, lease_expires_at = CAST(v->>6 AS timestamptz)
    FROM jsonb_array_elements(CAST(:notifications AS jsonb)) AS v
    WHERE n.id = CAST(v->>0 AS uuid)
    RETURNING 1
)"""


# A notification's ``delivery_status`` in its ``notification.settled`` event, aggregated over
# its channels ``c`` (``transitions.delivery_status``: times as stored).
DELIVERY_STATUS_AGG = f"""coalesce(jsonb_object_agg(c.channel, jsonb_build_object(
                       'status', c.status, 'attempts', c.attempts,
                       'last_error', c.last_error, 'provider_id', c.provider_id,
                       'next_attempt_at', {_iso("c.next_attempt_at")},
                       'updated_at', {_iso("c.updated_at")})), '{{}}')"""


def settled_events_sql(delivery_status: str, *, joins: str = "") -> str:
    """A SELECT of the ``notification.settled`` events (``webhook_events.notification_settled``)
    of the ``transitions`` rows ``s`` that settle, for ``pg_record_after``: ``delivery_status``
    is the SQL of each one's (``DELIVERY_STATUS_AGG`` over its channels as the statement leaves
    them), ``joins`` what it reads besides ``s``. The same jsonb as the Python event's JSON
    (tests/lifecycle/test_transition_events_sql.py)."""
    return f"""
    SELECT gen_random_uuid(), '{SETTLED_KIND}',
           jsonb_build_object(
               'id', CAST(s.notification_id AS text), 'user_id', s.user_id,
               'status', s.to_status,
               'delivery_status', {delivery_status}),
           s.occurred_at
    FROM transitions AS s{joins} WHERE s.kind = '{SETTLED_KIND}'"""


# Here from the channels as this statement leaves them: the ones it wrote (``channels``'
# RETURNING; a CTE's writes are not visible to the statement's reads) and the others of the
# notifications it settles as they were (locked by us; the written one first, ``stale``
# after). Each notification's channels are sorted and aggregated once (``settled_status``) and
# joined by hash, as the enqueue's fast path does (``enqueue_sql``): a subquery per event
# scanned the batch's written channels (a CTE has no index) for each, quadratic in the batch;
# so would an anti-join against them, which the planner runs as a nested loop.
_FINISHED = ", ".join(f"'{status}'" for status in sorted(FINISHED))
_SETTLED_STATUS_CTE = f""", settled_status AS MATERIALIZED (
    SELECT c.notification_id, {DELIVERY_STATUS_AGG} AS delivery_status
    FROM (SELECT DISTINCT ON (a.notification_id, a.channel) a.*
          FROM (SELECT 0 AS stale, w.* FROM channels AS w
                UNION ALL
                SELECT 1, d.notification_id, d.channel, d.status, d.attempts, d.last_error,
                       d.provider_id, d.next_attempt_at, d.updated_at
                FROM notification_deliveries AS d
                WHERE d.notification_id IN (
                    SELECT CAST(v->>0 AS uuid)
                    FROM jsonb_array_elements(CAST(:notifications AS jsonb)) AS v
                    WHERE v->>1 IN ({_FINISHED}))) AS a
          ORDER BY a.notification_id, a.channel, a.stale) AS c
    GROUP BY c.notification_id
)"""
_SETTLED_EVENTS = settled_events_sql(
    "ss.delivery_status",
    joins="\n    JOIN settled_status AS ss ON ss.notification_id = s.notification_id",
)


@functools.cache
def _write_back() -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """The write-back as positional SQL text, compiled once: no call compiles anything."""
    return positional(
        pg_record_after(_WRITE_CTES + _SETTLED_STATUS_CTE, settled_events=_SETTLED_EVENTS)
    )


async def write_back(
    executor: asyncpg.Connection | AsyncConnection,
    rows: Sequence[LockedRow],
    records: Sequence[TransitionRecord],
) -> int:
    """Write ``rows``' changes back and record ``records``; the number of webhook deliveries
    written."""
    sql, names, _ = _write_back()
    params = pg_record_params(records, settled_in_sql=True)
    params["channels"] = _channels_json(rows)
    params["notifications"] = _notifications_json(rows)
    args = tuple(params[name] for name in names)
    if isinstance(executor, AsyncConnection):
        result = await executor.exec_driver_sql(sql, args)
        return int(result.scalar_one())
    return int(await executor.fetchval(sql, *args))


def _channels_json(rows: Sequence[LockedRow]) -> str:
    return json_rows(
        (
            d.notification_id,
            d.channel,
            d.status,
            d.attempts,
            d.last_error,
            d.provider_id,
            d.unknown_outcomes,
            d.next_attempt_at,
            d.updated_at,
        )
        for row in rows
        for d in row.deliveries
        if d.changed
    )


def _notifications_json(rows: Sequence[LockedRow]) -> str:
    return json_rows(
        (
            row.id,
            row.status,
            row.retry_count,
            row.updated_at,
            row.next_attempt_at,
            row.lease_owner,
            row.lease_expires_at,
        )
        for row in rows
    )
