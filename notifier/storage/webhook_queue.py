"""The queries of the webhook senders: claim due deliveries under a lease, record what each
attempt did, hand leases back, find the next due time. (The API's side is ``webhooks``.)

A sender writes a delivery only while ``lease_owner`` is still its id: once its lease ran out
and another worker claimed the row, its late outcome is refused (the attempt is still logged),
so it cannot overwrite newer state. A delivery is sent at least once: a worker that dies after
the receiver answered but before its outcome was committed leaves the row leased, and it is sent
again, under the same ``webhook-id``, once the lease runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    Text,
    bindparam,
    cast,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from notifier.models.base import UTCDateTime, utcnow
from notifier.models.webhook import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """One leased delivery, with what sending it reads: its event and its endpoint."""

    id: uuid.UUID
    event_id: uuid.UUID
    endpoint_id: uuid.UUID
    attempts: int  # made before this claim
    event_type: str
    data_json: str  # the event's data as stored: JSON text
    event_created_at: datetime
    url: str
    # The current key first; the rotated-out one while it still signs.
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one attempt did: the delivery's new state, and the log entry."""

    delivery: ClaimedDelivery
    status: WebhookDeliveryStatus
    next_attempt_at: datetime | None  # None once settled
    status_code: int | None
    error: str | None
    duration_ms: int
    at: datetime
    disable_endpoint: str | None = None  # the reason, when the receiver said 410 Gone

    @property
    def attempt(self) -> int:
        return self.delivery.attempts + 1


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
# its lease expiry: should this worker die, the row is due again when the lease runs out.
_PG_CLAIM = text(
    f"""
WITH due AS (
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
FROM due, webhook_events AS ev, webhook_endpoints AS e
WHERE w.id = due.id AND ev.id = w.event_id AND e.id = w.endpoint_id
RETURNING {_RETURNED}
"""
).columns(
    created_at=UTCDateTime(),
    previous_secret_expires_at=UTCDateTime(),
)


async def claim_due(
    sessions: async_sessionmaker[AsyncSession],
    *,
    worker_id: str,
    batch_size: int,
    lease_seconds: float,
    per_endpoint: int,
    busy: Mapping[uuid.UUID, int],
) -> list[ClaimedDelivery]:
    """Lease up to ``batch_size`` due deliveries of enabled endpoints to this worker, at most
    ``per_endpoint - busy[endpoint]`` per endpoint, earliest due first.

    On PostgreSQL one statement on an autocommit connection (atomic by itself); on SQLite a
    ``BEGIN IMMEDIATE`` transaction, SQLite's only kind of write lock, around a read, the
    update and a read of what was claimed.
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
    async with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            connection = await session.connection(
                execution_options={"isolation_level": "AUTOCOMMIT"}
            )
            rows = (await connection.execute(_PG_CLAIM, params)).all()
        else:
            async with session.begin():
                rows = await _claim_sqlite(await session.connection(), params)
    return [_claimed(row, now) for row in rows]


def _claimed(row: Sequence[Any], now: datetime) -> ClaimedDelivery:
    # The columns of _RETURNED, in order: ClaimedDelivery's fields, then the keys.
    key, previous, previous_until = row[8], row[9], row[10]
    keys = (key, previous) if previous is not None and previous_until > now else (key,)
    return ClaimedDelivery(
        id=row[0],
        event_id=row[1],
        endpoint_id=row[2],
        attempts=row[3],
        event_type=row[4],
        data_json=row[5],
        event_created_at=row[6],
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


# --- outcomes ---------------------------------------------------------------------------------

# The outcomes of a batch on PostgreSQL: one statement, each column an array (one parameter a
# column, whatever the batch size). The deliveries still leased to this worker are locked in
# id order first; the log gets every attempt whose endpoint and event still exist (a delivery
# deleted meanwhile with its endpoint logs nothing rather than failing the batch).
_PG_RECORD = text(
    """
WITH outcome AS (
    SELECT * FROM unnest(
        CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:attempts AS int[]),
        CAST(:next AS timestamptz[]), CAST(:codes AS int[]), CAST(:errors AS text[]),
        CAST(:at AS timestamptz[]), CAST(:events AS uuid[]), CAST(:endpoints AS uuid[]),
        CAST(:types AS text[]), CAST(:ms AS int[])
    ) AS o(id, status, attempt, next_attempt_at, status_code, error, at, event_id,
           endpoint_id, event_type, duration_ms)
), ours AS (
    SELECT w.id FROM webhook_deliveries AS w JOIN outcome AS o ON o.id = w.id
    WHERE w.lease_owner = :worker
    ORDER BY w.id
    FOR UPDATE OF w
), recorded AS (
    UPDATE webhook_deliveries AS w
    SET status = o.status, attempts = o.attempt, next_attempt_at = o.next_attempt_at,
        lease_owner = NULL, lease_expires_at = NULL, last_status_code = o.status_code,
        last_error = o.error, updated_at = o.at
    FROM outcome AS o, ours
    WHERE w.id = o.id AND ours.id = o.id
)
INSERT INTO webhook_attempts (
    id, event_id, endpoint_id, event_type, attempt, status_code, error, duration_ms, at)
SELECT gen_random_uuid(), o.event_id, o.endpoint_id, o.event_type, o.attempt, o.status_code,
       o.error, o.duration_ms, o.at
FROM outcome AS o
WHERE EXISTS (SELECT 1 FROM webhook_endpoints AS e WHERE e.id = o.endpoint_id)
  AND EXISTS (SELECT 1 FROM webhook_events AS ev WHERE ev.id = o.event_id)
"""
)

# The same on SQLite, one row at a time (executemany): SQLite has no arrays.
_RECORD = (
    update(WebhookDelivery)
    .where(
        WebhookDelivery.id == bindparam("b_id"),
        WebhookDelivery.lease_owner == bindparam("b_worker"),
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempt"),
        next_attempt_at=bindparam("b_next", type_=UTCDateTime()),
        lease_owner=None,
        lease_expires_at=None,
        last_status_code=bindparam("b_code"),
        last_error=bindparam("b_error"),
        updated_at=bindparam("b_at", type_=UTCDateTime()),
    )
)
_LOG = insert(WebhookAttempt).from_select(
    [
        "id",
        "event_id",
        "endpoint_id",
        "event_type",
        "attempt",
        "status_code",
        "error",
        "duration_ms",
        "at",
    ],
    select(
        bindparam("a_id", type_=WebhookAttempt.id.type),
        bindparam("a_event", type_=WebhookAttempt.event_id.type),
        bindparam("a_endpoint", type_=WebhookAttempt.endpoint_id.type),
        bindparam("a_type", type_=String()),
        bindparam("a_attempt", type_=Integer()),
        bindparam("a_code", type_=Integer()),
        bindparam("a_error", type_=String()),
        bindparam("a_ms", type_=Integer()),
        bindparam("a_at", type_=UTCDateTime()),
    ).where(
        exists().where(WebhookEndpoint.id == bindparam("a_endpoint")),
        exists().where(WebhookEvent.id == bindparam("a_event")),
    ),
)


async def record_outcomes(
    session: AsyncSession, worker_id: str, outcomes: Sequence[DeliveryOutcome]
) -> None:
    """Write the outcomes (each delivery only while this worker still holds its lease), log
    every attempt, and disable the endpoints that answered 410. The caller commits.

    Rows are locked in one order by every writer — endpoints first, then deliveries, each in
    id order (replay and endpoint deletion do the same): two transactions that lock several
    rows in the same order cannot deadlock."""
    if not outcomes:
        return
    # Core statements on the connection: no ORM bookkeeping for plain row updates.
    connection = await session.connection()
    gone = {o.delivery.endpoint_id: o for o in outcomes if o.disable_endpoint is not None}
    for endpoint_id in sorted(gone):
        await connection.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled)
            .values(
                enabled=False,
                disabled_reason=gone[endpoint_id].disable_endpoint,
                updated_at=gone[endpoint_id].at,
            )
        )
    ordered = sorted(outcomes, key=lambda o: o.delivery.id)
    if connection.dialect.name == "postgresql":
        await connection.execute(_PG_RECORD, _columns(worker_id, ordered))
        return
    await connection.execute(
        _RECORD,
        [
            {
                "b_id": o.delivery.id,
                "b_worker": worker_id,
                "b_status": o.status.value,
                "b_attempt": o.attempt,
                "b_next": o.next_attempt_at,
                "b_code": o.status_code,
                "b_error": o.error,
                "b_at": o.at,
            }
            for o in ordered
        ],
    )
    await connection.execute(
        _LOG,
        [
            {
                "a_id": uuid.uuid4(),
                "a_event": o.delivery.event_id,
                "a_endpoint": o.delivery.endpoint_id,
                "a_type": o.delivery.event_type,
                "a_attempt": o.attempt,
                "a_code": o.status_code,
                "a_error": o.error,
                "a_ms": o.duration_ms,
                "a_at": o.at,
            }
            for o in ordered
        ],
    )


def _columns(worker_id: str, outcomes: Sequence[DeliveryOutcome]) -> dict[str, Any]:
    return {
        "worker": worker_id,
        "ids": [o.delivery.id for o in outcomes],
        "statuses": [o.status.value for o in outcomes],
        "attempts": [o.attempt for o in outcomes],
        "next": [o.next_attempt_at for o in outcomes],
        "codes": [o.status_code for o in outcomes],
        "errors": [o.error for o in outcomes],
        "at": [o.at for o in outcomes],
        "events": [o.delivery.event_id for o in outcomes],
        "endpoints": [o.delivery.endpoint_id for o in outcomes],
        "types": [o.delivery.event_type for o in outcomes],
        "ms": [o.duration_ms for o in outcomes],
    }


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
