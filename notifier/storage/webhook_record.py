"""What a webhook sender writes after its attempts: each delivery's new state and the
deliveries log, for a whole batch of outcomes at once (``record_outcomes``), and the endpoints
that answered 410 Gone disabled. (Claiming is ``webhook_queue``; the API's side ``webhooks``.)

A sender writes a delivery only while ``lease_owner`` is still its id: once its lease ran out
and another worker claimed the row, its late outcome is refused (the attempt is still logged),
so it cannot overwrite newer state.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, bindparam, exists, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notifier.models.base import UTCDateTime
from notifier.models.webhook import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)
from notifier.storage.webhook_queue import ClaimedDelivery


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


# The outcomes of a batch on PostgreSQL: one statement, each column an array (one parameter a
# column, whatever the batch size). The deliveries still leased to this worker are locked in
# id order first (found by primary key: ``= ANY(…)``, never a join the planner may hash over
# the whole table); the log gets every attempt whose endpoint and event still exist (a delivery
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
    SELECT w.id FROM webhook_deliveries AS w
    WHERE w.id = ANY(CAST(:ids AS uuid[])) AND w.lease_owner = :worker
    ORDER BY w.id
    FOR UPDATE OF w
), recorded AS (
    UPDATE webhook_deliveries AS w
    SET status = o.status, attempts = o.attempt, next_attempt_at = o.next_attempt_at,
        lease_owner = NULL, lease_expires_at = NULL, last_status_code = o.status_code,
        last_error = o.error, updated_at = o.at
    FROM outcome AS o
    WHERE w.id = ANY(ARRAY(SELECT id FROM ours)) AND o.id = w.id
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
    engine: AsyncEngine, worker_id: str, outcomes: Sequence[DeliveryOutcome]
) -> None:
    """Write the outcomes (each delivery only while this worker still holds its lease), log
    every attempt, and disable the endpoints that answered 410; committed when this returns.

    On PostgreSQL a batch without a 410 is one statement on an autocommit connection (atomic
    by itself: no BEGIN and COMMIT round trips). Otherwise one transaction, whose rows are
    locked in one order by every writer — endpoints first, then deliveries, each in id order
    (replay and endpoint deletion do the same): two transactions that lock several rows in the
    same order cannot deadlock."""
    if not outcomes:
        return
    ordered = sorted(outcomes, key=lambda o: o.delivery.id)
    gone = {o.delivery.endpoint_id: o for o in outcomes if o.disable_endpoint is not None}
    async with engine.connect() as connection:
        postgresql = connection.dialect.name == "postgresql"
        if postgresql and not gone:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(_PG_RECORD, _columns(worker_id, ordered))
            return
        async with connection.begin():
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
            if postgresql:
                await connection.execute(_PG_RECORD, _columns(worker_id, ordered))
            else:
                await _record_sqlite(connection, worker_id, ordered)


async def _record_sqlite(
    connection: AsyncConnection, worker_id: str, ordered: Sequence[DeliveryOutcome]
) -> None:
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
