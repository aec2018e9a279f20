"""The webhook queries the API and the state changes run: endpoints, emitting events (the
outbox), replay, the deliveries log. What the sending workers run is ``webhook_queue`` (claim,
release), ``webhook_record`` (outcomes) and ``webhook_log`` (pruning).

``emit_events`` is called inside other transactions (whoever changes a notification or a task
writes the events of that change in the same transaction), so it must be cheap: on PostgreSQL
one statement, which writes nothing when no endpoint subscribes to the events' types, and
queues a NOTIFY (delivered on commit) only when it created deliveries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import TextClause

from notifier.models.base import utcnow
from notifier.models.webhook import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)
from notifier.webhooks import events as webhook_events
from notifier.webhooks.events import ALL_EVENTS, WebhookEventType

# LISTEN/NOTIFY channel that wakes webhook senders; the payload is empty, it only says "look".
WEBHOOK_WAKEUP_CHANNEL = "notifier_webhooks"
# Serializes endpoint creations on PostgreSQL (pg_advisory_xact_lock), so two concurrent POSTs
# cannot both pass the endpoint limit. SQLite's BEGIN IMMEDIATE serializes them already.
_CREATE_LOCK = 0x77686B5F656E6470  # "whk_endp"
_PENDING = WebhookDeliveryStatus.PENDING.value
_TEST = WebhookEventType.WEBHOOK_TEST.value

Executor = AsyncConnection | AsyncSession


class TooManyEndpoints(Exception):
    """The endpoint limit (``NOTIFIER_WEBHOOK_MAX_ENDPOINTS``) is reached."""


def _dialect(executor: Executor) -> str:
    if isinstance(executor, AsyncSession):
        return executor.get_bind().dialect.name
    return executor.dialect.name


# --- endpoints --------------------------------------------------------------------------------


async def create_endpoint(
    session: AsyncSession,
    *,
    url: str,
    events: list[str],
    description: str | None,
    key: bytes,
    limit: int,
) -> WebhookEndpoint:
    """Add an endpoint unless ``limit`` endpoints exist already. The caller commits."""
    if _dialect(session) == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(_CREATE_LOCK)))
    count = await session.scalar(select(func.count()).select_from(WebhookEndpoint))
    if (count or 0) >= limit:
        raise TooManyEndpoints(f"at most {limit} webhook endpoints; delete one first")
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        url=url,
        events=events,
        description=description,
        enabled=True,
        secret=key,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def get_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, for_update: bool = False
) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def list_endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    return list((await session.scalars(query)).all())


def set_enabled(endpoint: WebhookEndpoint, enabled: bool, now: datetime) -> None:
    """Re-enabling clears the reason it was disabled for; its paused deliveries resume."""
    if enabled != endpoint.enabled:
        endpoint.enabled = enabled
        endpoint.disabled_reason = None if enabled else "disabled by request"
        endpoint.updated_at = now


def rotate_secret(
    endpoint: WebhookEndpoint, new_key: bytes, *, overlap: timedelta, now: datetime
) -> None:
    """The current key goes on signing beside ``new_key`` for ``overlap``; a key rotated out
    earlier stops at once (a request carries at most two signatures)."""
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + overlap
    endpoint.secret = new_key
    endpoint.updated_at = now


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> bool:
    """Its deliveries (ON DELETE CASCADE) and its log go with it. The caller commits.

    The endpoint, then its deliveries in id order, are locked before the cascade deletes
    them in an order of its own: the order every writer of these rows keeps
    (``webhook_record.record_outcomes``), so a sender recording outcomes meanwhile cannot
    deadlock with it. The log has no foreign key (migration 0010): its entries are deleted
    here, once the endpoint's lock has made every outcome statement that logs to it finish."""
    if await get_endpoint(session, endpoint_id, for_update=True) is None:
        return False
    await _lock_deliveries(session, WebhookDelivery.endpoint_id == endpoint_id)
    await session.execute(delete(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id))
    result = await session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def recent_attempts(
    session: AsyncSession, endpoint_id: uuid.UUID, *, limit: int
) -> list[WebhookAttempt]:
    query = (
        select(WebhookAttempt)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.at.desc(), WebhookAttempt.attempt.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def _lock_deliveries(session: AsyncSession, where: ColumnElement[bool]) -> None:
    if _dialect(session) == "postgresql":  # SQLite's BEGIN IMMEDIATE has locked everything
        query = (
            select(WebhookDelivery.id).where(where).order_by(WebhookDelivery.id).with_for_update()
        )
        await session.execute(query)


# --- emitting ---------------------------------------------------------------------------------

# One statement: the events that some endpoint subscribes to (enabled or not: a disabled one
# may be re-enabled and replay them), and a delivery of each to every enabled endpoint whose
# filter matches, due at once. The deliveries reference events inserted by the sibling CTE:
# foreign keys are checked at the end of the statement. ``data`` arrives as text[] and is cast
# per element (the driver's jsonb codec is not applied inside arrays). A writer may add events
# it builds in SQL (``pg_emit_after``'s ``more_events``): no event objects or JSON in Python.
_PARAM_EVENTS = """
    SELECT id, type, CAST(data AS jsonb) AS data, created_at FROM unnest(
        CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:data AS text[]),
        CAST(:created_at AS timestamptz[])
    ) AS t(id, type, data, created_at)"""


def _emit_ctes(incoming: str, also_select: str = "") -> str:
    return f"""
incoming AS ({incoming}
), subscribed AS (
    SELECT i.* FROM incoming AS i
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints AS e
                  WHERE e.events @> to_jsonb(i.type) OR e.events @> '"{ALL_EVENTS}"')
), new_events AS (
    INSERT INTO webhook_events (id, type, data, created_at)
    SELECT id, type, data, created_at FROM subscribed
    RETURNING id, type, created_at
), new_deliveries AS (
    INSERT INTO webhook_deliveries (
        id, event_id, endpoint_id, status, attempts, next_attempt_at, created_at, updated_at)
    SELECT gen_random_uuid(), ev.id, e.id, '{_PENDING}', 0, ev.created_at, ev.created_at,
           ev.created_at
    FROM new_events AS ev
    JOIN webhook_endpoints AS e
      ON e.enabled AND (e.events @> to_jsonb(ev.type) OR e.events @> '"{ALL_EVENTS}"')
    RETURNING 1
), created AS (SELECT count(*) AS n FROM new_deliveries)
SELECT n, CASE WHEN n > 0 THEN pg_notify(:wakeup, '') END AS woke{also_select} FROM created
"""


_PG_EMIT = text(f"WITH {_emit_ctes(_PARAM_EVENTS)}")


def pg_emit_after(cte: str, *, more_events: str | None = None, also_select: str = "") -> TextClause:
    """The emit statement run after another data-modifying CTE (``name AS (INSERT …)``) in the
    same statement: a writer's own rows and its events in one round trip
    (``transitions.record_transitions``). Parameters: ``pg_emit_params`` and the CTE's own.
    ``more_events`` is a SELECT of further events' ``(id, type, data jsonb, created_at)``
    that the statement builds itself (``transitions``' channel events). ``also_select``:
    further columns of the final SELECT (``, expr AS name``), evaluated once (the enqueue's
    own NOTIFYs)."""
    incoming = (
        _PARAM_EVENTS if more_events is None else f"{_PARAM_EVENTS}\n    UNION ALL {more_events}"
    )
    return text(f"WITH {cte},{_emit_ctes(incoming, also_select)}")


def pg_emit_params(events: Sequence[webhook_events.WebhookEvent]) -> dict[str, Any]:
    return {
        "ids": [event.id for event in events],
        "types": [event.type.value for event in events],
        # Plain JSON already, nearly always: pydantic's walk over every value (a third of
        # encoding an event) only for what json cannot encode itself.
        "data": [json.dumps(event.data, default=to_jsonable_python) for event in events],
        "created_at": [event.created_at for event in events],
        "wakeup": WEBHOOK_WAKEUP_CHANNEL,
    }


async def emit_events(connection: Executor, events: Sequence[webhook_events.WebhookEvent]) -> int:
    """Write ``events`` and their deliveries in the caller's transaction; the number of
    deliveries created. Events no endpoint subscribes to are not stored.

    On PostgreSQL the workers are woken by a NOTIFY that the commit delivers (so none wakes for
    a row it cannot see yet); on SQLite the caller wakes an in-process sender after its commit
    when this returned more than 0.
    """
    if not events:
        return 0
    if _dialect(connection) == "postgresql":
        return int((await connection.execute(_PG_EMIT, pg_emit_params(events))).scalar_one())
    return await _emit_sqlite(connection, events)


async def _emit_sqlite(connection: Executor, events: Sequence[webhook_events.WebhookEvent]) -> int:
    endpoints = (
        await connection.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events, WebhookEndpoint.enabled)
        )
    ).all()
    if not endpoints:
        return 0
    event_rows: list[dict[str, Any]] = []
    delivery_rows: list[dict[str, Any]] = []
    for event in events:
        targets = [e for e in endpoints if webhook_events.matches(e.events, event.type)]
        if not targets:
            continue
        event_rows.append(_event_row(event))
        delivery_rows += [_delivery_row(event, e.id) for e in targets if e.enabled]
    if event_rows:
        await connection.execute(insert(WebhookEvent), event_rows)
    if delivery_rows:
        await connection.execute(insert(WebhookDelivery), delivery_rows)
    return len(delivery_rows)


def _event_row(event: webhook_events.WebhookEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type.value,
        "data": _plain(event.data),
        "created_at": event.created_at,
    }


def _plain(data: dict[str, Any]) -> Any:
    # The JSON the column stores: datetimes as ISO 8601 text, UUIDs as text.
    return to_jsonable_python(data)


def _delivery_row(event: webhook_events.WebhookEvent, endpoint_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "event_id": event.id,
        "endpoint_id": endpoint_id,
        "status": _PENDING,
        "attempts": 0,
        "next_attempt_at": event.created_at,
        "created_at": event.created_at,
        "updated_at": event.created_at,
    }


async def emit_to_endpoint(
    session: AsyncSession, event: webhook_events.WebhookEvent, endpoint_id: uuid.UUID
) -> None:
    """Write ``event`` with one delivery, to ``endpoint_id`` only, whatever its filter (the
    test event). The caller commits."""
    await session.execute(insert(WebhookEvent), [_event_row(event)])
    await session.execute(insert(WebhookDelivery), [_delivery_row(event, endpoint_id)])
    await wake_senders(session)


async def wake_senders(executor: Executor) -> None:
    """Queue a NOTIFY in the current transaction (PostgreSQL; delivered on commit)."""
    if _dialect(executor) == "postgresql":
        await executor.execute(select(func.pg_notify(WEBHOOK_WAKEUP_CHANNEL, "")))


# --- replay -----------------------------------------------------------------------------------


def _replayed(endpoint: WebhookEndpoint, since: datetime) -> ColumnElement[bool]:
    """The events a replay sends again: those since ``since`` that the endpoint's filter
    matches (test events only when they were this endpoint's own)."""
    already_ours = (
        exists()
        .where(
            WebhookDelivery.event_id == WebhookEvent.id,
            WebhookDelivery.endpoint_id == endpoint.id,
        )
        .correlate_except(WebhookDelivery)
    )
    wanted: ColumnElement[bool] = WebhookEvent.type != _TEST
    if ALL_EVENTS not in endpoint.events:
        wanted = and_(wanted, WebhookEvent.type.in_(endpoint.events))
    return and_(WebhookEvent.created_at >= since, or_(wanted, already_ours))


async def replay(session: AsyncSession, endpoint: WebhookEndpoint, since: datetime) -> int:
    """Queue every event since ``since`` again for ``endpoint``, under its own id (so a
    receiver that already has one can tell): a new delivery where there was none, else the
    existing one starts over (status pending, a fresh retry schedule). How many; the caller
    commits, and holds ``endpoint``'s row lock (endpoint first, then deliveries: the order of
    every writer)."""
    dialect = _dialect(session)
    now = utcnow()
    # The rows it starts over, locked in id order first (see ``delete_endpoint``).
    recent = select(WebhookEvent.id).where(WebhookEvent.created_at >= since)
    await _lock_deliveries(
        session,
        and_(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.event_id.in_(recent)),
    )
    new_id = (
        func.gen_random_uuid()
        if dialect == "postgresql"
        else func.lower(func.hex(func.randomblob(16)))  # how SQLite stores a Uuid: 32 hex
    )
    rows: Select[Any] = select(
        new_id,
        WebhookEvent.id,
        literal(endpoint.id, WebhookDelivery.endpoint_id.type),
        literal(_PENDING),
        literal(0),
        literal(now, WebhookDelivery.next_attempt_at.type),
        literal(now, WebhookDelivery.created_at.type),
        literal(now, WebhookDelivery.updated_at.type),
    ).where(_replayed(endpoint, since))
    columns = [
        "id",
        "event_id",
        "endpoint_id",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "updated_at",
    ]
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert_(WebhookDelivery).from_select(columns, rows)
    statement = statement.on_conflict_do_update(
        index_elements=["event_id", "endpoint_id"],
        set_={
            "status": _PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_status_code": None,
            "last_error": None,
            "updated_at": now,
        },
    )
    result = await session.execute(statement)
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        await wake_senders(session)
    return count
