"""The queue side of the webhook senders: claim due deliveries under a lease, hand leases
back, find the next due time. What an attempt did is written by ``webhook_record``; the API's
side is ``webhooks``.

A delivery is sent at least once: a worker that dies after the receiver answered but before its
outcome was committed leaves the row leased, and it is sent again, under the same
``webhook-id``, once the lease runs out.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import Text, cast, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from notifier.models.base import UTCDateTime, utcnow
from notifier.models.webhook import WebhookDelivery, WebhookEndpoint, WebhookEvent
from notifier.storage.driver import HeldConnections, on_held, positional
from notifier.webhooks.events import envelope_body


# Not frozen, though nothing changes it once built: a frozen dataclass sets each field through
# ``object.__setattr__``, which cost ~7 us per instance of eight fields, three per event.
@dataclass(slots=True)
class ClaimedDelivery:
    """One leased delivery, with what sending it reads: its event and its endpoint."""

    id: uuid.UUID
    event_id: uuid.UUID
    endpoint_id: uuid.UUID
    attempts: int  # made before this claim
    event_type: str
    # The request body (``events.envelope_body``): built once per event in a claim, shared by
    # the deliveries of that event to every endpoint.
    body: bytes
    url: str
    # The current key first; the rotated-out one while it still signs.
    keys: tuple[bytes, ...]


_RETURNED = """w.id, w.event_id, w.endpoint_id, w.attempts, ev.type, ev.data::text AS data,
       ev.created_at,
       e.url, e.secret, e.previous_secret, e.previous_secret_expires_at"""

# The claim on PostgreSQL. Each enabled endpoint contributes up to its free share of this
# worker's per-endpoint cap (``per_endpoint`` minus what this worker already holds
# there), its earliest due rows first, read from the partial index (endpoint_id,
# next_attempt_at); then the earliest of all those, up to ``batch``. So a backlog at one slow
# endpoint fills at most its share, and every other endpoint's due rows are still claimed.
# ``SKIP LOCKED`` lets concurrent workers take disjoint rows without waiting on one another; the
# locking SELECTs sit in a CTE, evaluated exactly once. A claimed row's next_attempt_at becomes
# its lease expiry: should this worker die, the row is due again when the lease runs out. The
# UPDATE finds the rows by ``id = ANY(ARRAY(…))``, a primary-key lookup each: joined to the CTE,
# the planner hashed the whole table instead (it cannot tell the CTE's size), a scan of every
# queued delivery per claim (bench/RESULTS.md "Webhook delivery A/B"). The claim's commit does
# not wait for its WAL flush (``synchronous_commit`` off for this statement's transaction alone,
# the ``no_flush`` CTE): a lease lost with a database crash only makes its rows due again, sent
# again under the same ``webhook-id`` (at least once), and an outcome, whose commit does wait,
# flushes every claim before it in the WAL. About half of a claim's time was that flush (same
# section), time in which the sender's lanes may run dry.
_PG_CLAIM = text(
    f"""
WITH no_flush AS (SELECT set_config('synchronous_commit', 'off', true)),
due AS (
    SELECT d.id
    FROM webhook_endpoints AS e
    LEFT JOIN unnest(CAST(:busy_endpoints AS uuid[]), CAST(:busy_counts AS int[]))
           AS b(endpoint_id, n) ON b.endpoint_id = e.id
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at FROM webhook_deliveries AS d
        WHERE d.endpoint_id = e.id
          AND d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= :now
        ORDER BY d.next_attempt_at
        LIMIT GREATEST(:per_endpoint - COALESCE(b.n, 0), 0)
        FOR UPDATE SKIP LOCKED
    ) AS d
    WHERE e.enabled
    ORDER BY d.next_attempt_at
    LIMIT :batch
)
UPDATE webhook_deliveries AS w
SET lease_owner = :worker, lease_expires_at = :until, next_attempt_at = :until
FROM webhook_events AS ev, webhook_endpoints AS e
WHERE w.id = ANY(ARRAY(SELECT id FROM due)) AND ev.id = w.event_id AND e.id = w.endpoint_id
  AND EXISTS (SELECT FROM no_flush)
RETURNING {_RETURNED}
"""
).columns(
    created_at=UTCDateTime(),
    previous_secret_expires_at=UTCDateTime(),
)


async def claim_due(
    engine: AsyncEngine,
    *,
    worker_id: str,
    batch_size: int,
    lease_seconds: float,
    per_endpoint: int,
    busy: Mapping[uuid.UUID, int],
    held: HeldConnections | None = None,
) -> list[ClaimedDelivery]:
    """Lease up to ``batch_size`` due deliveries of enabled endpoints to this worker, at most
    ``per_endpoint - busy[endpoint]`` per endpoint, earliest due first.

    On PostgreSQL one statement on an autocommit connection (atomic by itself): with ``held``
    (a sender's, PostgreSQL only) on the asyncpg connection itself, the statement's text
    compiled once and prepared once per connection (``driver``: SQLAlchemy's execution path
    and a pool check-out per claim cost the sender more CPU than the statement's own Python
    side); otherwise through SQLAlchemy. On SQLite a ``BEGIN IMMEDIATE`` transaction, SQLite's
    only kind of write lock, around a read, the update and a read of what was claimed.
    """
    now = utcnow()
    params: dict[str, Any] = {
        "now": now,
        "until": now + timedelta(seconds=lease_seconds),
        "batch": batch_size,
        "worker": worker_id,
        "per_endpoint": per_endpoint,
        "busy_endpoints": list(busy),
        "busy_counts": list(busy.values()),
    }
    rows: Sequence[Sequence[Any]]
    if held is not None:
        rows = await on_held(held, functools.partial(_claim_on_driver, params=params))
    else:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                rows = (await autocommit.execute(_PG_CLAIM, params)).all()
            else:
                async with connection.begin():
                    rows = await _claim_sqlite(connection, params)
    bodies: dict[uuid.UUID, bytes] = {}
    return [_claimed(row, now, bodies) for row in rows]


@functools.cache
def _claim_sql() -> tuple[str, tuple[str, ...]]:
    sql, names, _ = positional(_PG_CLAIM)
    return sql, names


async def _claim_on_driver(
    driver: asyncpg.Connection, *, params: dict[str, Any]
) -> Sequence[Sequence[Any]]:
    # The driver returns timestamptz as UTC-aware datetimes, as ``UTCDateTime`` does.
    sql, names = _claim_sql()
    rows: list[asyncpg.Record] = await driver.fetch(sql, *(params[name] for name in names))
    return rows


def _claimed(row: Sequence[Any], now: datetime, bodies: dict[uuid.UUID, bytes]) -> ClaimedDelivery:
    # The columns of _RETURNED, in order: id, event_id, endpoint_id, attempts, the event's
    # type, data and time (its body), the url, then the keys.
    key, previous, previous_until = row[8], row[9], row[10]
    keys = (key, previous) if previous is not None and previous_until > now else (key,)
    event_id = row[1]
    body = bodies.get(event_id)
    if body is None:
        body = bodies[event_id] = envelope_body(event_id, row[4], row[6], row[5])
    return ClaimedDelivery(
        id=row[0],
        event_id=event_id,
        endpoint_id=row[2],
        attempts=row[3],
        event_type=row[4],
        body=body,
        url=row[7],
        keys=keys,
    )


async def _claim_sqlite(
    connection: AsyncConnection, params: dict[str, Any]
) -> Sequence[Sequence[Any]]:
    # No LATERAL and no SKIP LOCKED here (nor needed: one writer at a time). A window
    # function ranks each endpoint's due rows; the per-endpoint shares are applied below.
    rank = (
        func.row_number()
        .over(
            partition_by=WebhookDelivery.endpoint_id,
            order_by=WebhookDelivery.next_attempt_at,
        )
        .label("rank")
    )
    ranked = (
        select(WebhookDelivery.id, WebhookDelivery.endpoint_id, rank)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookEndpoint.enabled,
            WebhookDelivery.next_attempt_at.is_not(None),
            WebhookDelivery.next_attempt_at <= params["now"],
        )
        .subquery()
    )
    candidates = await connection.execute(
        select(ranked.c.id, ranked.c.endpoint_id, ranked.c.rank)
        .where(ranked.c.rank <= params["per_endpoint"])
        .order_by(ranked.c.rank)
    )
    busy = dict(zip(params["busy_endpoints"], params["busy_counts"], strict=True))
    ids = [
        ident
        for ident, endpoint_id, position in candidates
        if position <= params["per_endpoint"] - busy.get(endpoint_id, 0)
    ][: params["batch"]]
    if not ids:
        return []
    await connection.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(
            lease_owner=params["worker"],
            lease_expires_at=params["until"],
            next_attempt_at=params["until"],
        )
    )
    query = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.event_id,
            WebhookDelivery.endpoint_id,
            WebhookDelivery.attempts,
            WebhookEvent.type,
            cast(WebhookEvent.data, Text),  # the stored JSON text, as on PostgreSQL
            WebhookEvent.created_at,
            WebhookEndpoint.url,
            WebhookEndpoint.secret,
            WebhookEndpoint.previous_secret,
            WebhookEndpoint.previous_secret_expires_at,
        )
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id.in_(ids))
    )
    return list((await connection.execute(query)).all())


async def release(session: AsyncSession, worker_id: str, ids: Sequence[uuid.UUID]) -> None:
    """Hand back leases this worker still holds, due at once (a stopping worker's unsent
    deliveries). The caller commits."""
    if ids:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), WebhookDelivery.lease_owner == worker_id)
            .values(lease_owner=None, lease_expires_at=None, next_attempt_at=utcnow())
        )


async def next_due_at(
    session: AsyncSession, *, exclude: Sequence[uuid.UUID] = ()
) -> datetime | None:
    """When the earliest delivery of an enabled endpoint is due (for an idle worker's sleep),
    leaving out the endpoints in ``exclude`` (those this worker cannot send more to now): per
    endpoint, the first entry of its part of the claim index."""
    earliest = (
        select(func.min(WebhookDelivery.next_attempt_at))
        .where(
            WebhookDelivery.endpoint_id == WebhookEndpoint.id,
            WebhookDelivery.next_attempt_at.is_not(None),
        )
        .scalar_subquery()
    )
    query = select(func.min(earliest)).where(WebhookEndpoint.enabled)
    if exclude:
        query = query.where(WebhookEndpoint.id.not_in(exclude))
    return (await session.execute(query)).scalar_one_or_none()
