"""What a webhook sender writes after its attempts: each delivery's new state and the
deliveries log, for a whole batch of outcomes at once (``record_outcomes``), and the endpoints
that answered 410 Gone disabled. (Claiming is ``webhook_queue``; the API's side ``webhooks``.)

A sender writes a delivery only while ``lease_owner`` is still its id: once its lease ran out
and another worker claimed the row, its late outcome is refused (the attempt is still logged),
so it cannot overwrite newer state.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import Integer, String, bindparam, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notifier.models.base import UTCDateTime
from notifier.models.webhook import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)
from notifier.storage.driver import HeldConnections, json_rows, on_held
from notifier.storage.webhook_queue import ClaimedDelivery


# Not frozen, though nothing changes it once built: a frozen dataclass sets each field through
# ``object.__setattr__``, which cost ~7 us per instance of eight fields, three per event.
@dataclass(slots=True)
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


# The outcomes of a batch on PostgreSQL: one statement, fixed positional SQL text (run on the
# asyncpg connection itself, or through SQLAlchemy's ``exec_driver_sql``), the worker id and
# the outcomes as one JSON parameter, an array of arrays (``driver.json_rows`` says why not one
# array a column). Rows are locked in the order every writer keeps: the batch's endpoints first
# (``FOR KEY SHARE``, once each: an endpoint being deleted waits for this statement, or is
# gone from its view), then the deliveries still leased to this worker in id order (found by
# primary key: ``= ANY(…)``, never a join the planner may hash over the whole table). The log
# gets every attempt whose endpoint and event still exist (a delivery deleted meanwhile with
# its endpoint logs nothing rather than failing the batch): the log has no foreign keys
# (migration 0010), whose trigger per row cost more than the rest of the row.
PG_RECORD = """
WITH outcome AS (
    SELECT CAST(v->>0 AS uuid) AS id, v->>1 AS status, CAST(v->>2 AS int) AS attempt,
           CAST(v->>3 AS timestamptz) AS next_attempt_at, CAST(v->>4 AS int) AS status_code,
           v->>5 AS error, CAST(v->>6 AS timestamptz) AS at, CAST(v->>7 AS uuid) AS event_id,
           CAST(v->>8 AS uuid) AS endpoint_id, v->>9 AS event_type,
           CAST(v->>10 AS int) AS duration_ms
    FROM jsonb_array_elements(CAST($2 AS jsonb)) AS v
), live AS (
    SELECT e.id FROM webhook_endpoints AS e
    WHERE e.id = ANY(ARRAY(SELECT DISTINCT endpoint_id FROM outcome))
    ORDER BY e.id
    FOR KEY SHARE OF e
), ours AS (
    SELECT w.id FROM webhook_deliveries AS w
    WHERE w.id = ANY(ARRAY(SELECT id FROM outcome)) AND w.lease_owner = $1
      AND w.endpoint_id = ANY(ARRAY(SELECT id FROM live))
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
WHERE o.endpoint_id = ANY(ARRAY(SELECT id FROM live))
  AND EXISTS (SELECT 1 FROM webhook_events AS ev WHERE ev.id = o.event_id)
"""

# An endpoint that answered 410 Gone, disabled (in the transaction of its batch's outcomes).
PG_DISABLE = """
UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = $3
WHERE id = $1 AND enabled
"""

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
    engine: AsyncEngine,
    worker_id: str,
    outcomes: Sequence[DeliveryOutcome],
    *,
    held: HeldConnections | None = None,
) -> None:
    """Write the outcomes (each delivery only while this worker still holds its lease), log
    every attempt, and disable the endpoints that answered 410; committed when this returns.

    On PostgreSQL a batch without a 410 is one statement on an autocommit connection (atomic
    by itself: no BEGIN and COMMIT round trips): with ``held`` (a sender's, PostgreSQL only)
    on the asyncpg connection itself, prepared once per connection, its errors translated for
    ``db.classify`` (``driver.on_held``). Otherwise one transaction, whose rows are locked in
    one order by every writer — endpoints first, then deliveries, each in id order (replay and
    endpoint deletion do the same): two transactions that lock several rows in the same order
    cannot deadlock."""
    if not outcomes:
        return
    ordered = sorted(outcomes, key=lambda o: o.delivery.id)
    gone = {o.delivery.endpoint_id: o for o in outcomes if o.disable_endpoint is not None}
    disabled = [
        (endpoint_id, gone[endpoint_id].disable_endpoint, gone[endpoint_id].at)
        for endpoint_id in sorted(gone)
    ]
    if held is not None:
        await on_held(held, functools.partial(_record_on_driver, worker_id, ordered, disabled))
        return
    async with engine.connect() as connection:
        postgresql = connection.dialect.name == "postgresql"
        if postgresql and not gone:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(PG_RECORD, (worker_id, _outcomes_json(ordered)))
            return
        async with connection.begin():
            if postgresql:
                for row in disabled:
                    await connection.exec_driver_sql(PG_DISABLE, row)
                await connection.exec_driver_sql(PG_RECORD, (worker_id, _outcomes_json(ordered)))
                return
            for endpoint_id, reason, at in disabled:
                await connection.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled)
                    .values(enabled=False, disabled_reason=reason, updated_at=at)
                )
            await _record_sqlite(connection, worker_id, ordered)


async def _record_on_driver(
    worker_id: str,
    ordered: Sequence[DeliveryOutcome],
    disabled: Sequence[tuple[uuid.UUID, str | None, datetime]],
    driver: asyncpg.Connection,
) -> None:
    if not disabled:
        await driver.execute(PG_RECORD, worker_id, _outcomes_json(ordered))
        return
    async with driver.transaction():
        for row in disabled:
            await driver.execute(PG_DISABLE, *row)
        await driver.execute(PG_RECORD, worker_id, _outcomes_json(ordered))


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


def _outcomes_json(outcomes: Sequence[DeliveryOutcome]) -> str:
    """The outcomes as ``PG_RECORD``'s JSON parameter: one array each, in its columns' order."""
    return json_rows(
        (
            o.delivery.id,
            o.status.value,
            o.delivery.attempts + 1,
            o.next_attempt_at,
            o.status_code,
            o.error,
            o.at,
            o.delivery.event_id,
            o.delivery.endpoint_id,
            o.delivery.event_type,
            o.duration_ms,
        )
        for o in outcomes
    )
