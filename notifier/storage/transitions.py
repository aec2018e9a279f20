"""Recording transitions: every change of status a writer made through the state machine
becomes a ``notification_transitions`` row and, when it is one, a webhook event in the outbox —
both in the writer's transaction (docs/architecture.md, "The state machine").

The writers (``outcome_batch``, ``notifications``, ``realtime``) apply changes with
``advance_channel`` and ``summarize_notification``, which collect a ``TransitionRecord`` for
each change of status, then hand the batch to ``record_transitions``: on PostgreSQL one
statement for the rows (``unnest``) and their events (``webhooks``' outbox statement after it);
on SQLite an executemany INSERT and ``webhooks.emit_events``. A transaction that rolls back
takes both with it; a commit delivers both.

This is the only writer of ``notification_transitions``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from notifier.lifecycle.machine import (
    ChannelChange,
    ChannelState,
    NotificationState,
    Step,
    Transition,
    advance,
    read_transition,
    summarize,
)
from notifier.lifecycle.statuses import SUCCEEDED
from notifier.models.base import iso
from notifier.models.transition import NotificationTransition
from notifier.storage.driver import json_rows
from notifier.storage.webhooks import (
    WEBHOOK_WAKEUP_CHANNEL,
    Executor,
    emit_events,
    pg_emit_after,
    pg_emit_params,
)
from notifier.webhooks import events as webhook_events


class Wakeups(Protocol):
    """``storage.wakeups.Wakeups``, as the writers here use it (that module imports them)."""

    def after_commit(self, session: AsyncSession, channel: str) -> None: ...


# How long the history is kept (the worker's housekeeping prunes what is older).
KEEP_DAYS = 7
# notification_transitions.latency_ms is an int4: a send_at 25 days or more in the past (a
# long-scheduled or restored notification) would overflow it and sink the whole outcome batch.
MAX_LATENCY_MS = 2**31 - 1
SETTLED_KIND = "notification.settled"


class TrackedNotification(NotificationState, Protocol):
    """A notification as a writer holds it: what the machine reads, and who and when."""

    id: uuid.UUID
    user_id: str
    send_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One transition with the facts its row and its webhook event carry."""

    notification_id: uuid.UUID
    user_id: str
    transition: Transition
    occurred_at: datetime
    attempts: int | None = None  # the channel's count after the change (channel kinds)
    latency_ms: int | None = None  # a channel's first success only: from due to now
    last_error: str | None = None
    provider_id: str | None = None
    delivery_status: dict[str, dict[str, Any]] | None = None  # notification.settled only


def due_at(notification: TrackedNotification) -> datetime:
    """When the notification became due: its latencies run from here."""
    return notification.send_at or notification.created_at


def advance_channel(
    notification: TrackedNotification,
    channel: ChannelState,
    change: ChannelChange,
    now: datetime,
    records: list[TransitionRecord],
) -> Step:
    """``machine.advance`` on one of ``notification``'s channels; a change of status is
    appended to ``records``."""
    step = advance(channel, change, now)
    transition = step.transition
    if transition is not None:
        latency = None
        # The first success: what the user waited for (a `delivered` after `sent` is not).
        if transition.to_status in SUCCEEDED and transition.from_status not in SUCCEEDED:
            waited = int((now - due_at(notification)).total_seconds() * 1000)
            latency = min(max(waited, 0), MAX_LATENCY_MS)
        records.append(
            TransitionRecord(
                notification.id,
                notification.user_id,
                transition,
                now,
                attempts=channel.attempts,
                latency_ms=latency,
                last_error=channel.last_error,
                provider_id=channel.provider_id,
            )
        )
    return step


def summarize_notification(
    notification: TrackedNotification,
    now: datetime,
    records: list[TransitionRecord],
    *,
    leased: bool,
    settled_in_sql: bool = False,
) -> None:
    """``machine.summarize``; ``notification.settled`` is appended to ``records``, with its
    ``delivery_status`` unless the writer's statement builds the event itself
    (``settled_in_sql``: ``outcome_pg``)."""
    step = summarize(notification, now, leased=leased)
    if step.transition is not None:
        records.append(
            TransitionRecord(
                notification.id,
                notification.user_id,
                step.transition,
                now,
                delivery_status=None
                if settled_in_sql
                else delivery_status(notification.deliveries),
            )
        )


def read_record(
    notification_id: uuid.UUID, user_id: str, read_at: datetime, *, was_read: bool = False
) -> TransitionRecord | None:
    transition = read_transition(was_read)
    if transition is None:
        return None
    return TransitionRecord(notification_id, user_id, transition, read_at)


def delivery_status(channels: Iterable[ChannelState]) -> dict[str, dict[str, Any]]:
    """The API's ``delivery_status`` object, from the channels a writer holds."""
    return {
        c.channel: {
            "status": c.status,
            "attempts": c.attempts,
            "last_error": c.last_error,
            "provider_id": c.provider_id,
            "next_attempt_at": iso(c.next_attempt_at),
            "updated_at": iso(c.updated_at),
        }
        for c in channels
    }


def _event(record: TransitionRecord) -> webhook_events.WebhookEvent | None:
    t = record.transition
    if t.kind == SETTLED_KIND:
        return webhook_events.notification_settled(
            notification_id=record.notification_id,
            user_id=record.user_id,
            status=t.to_status,
            delivery_status=record.delivery_status or {},
            at=record.occurred_at,
        )
    if t.kind == "notification.read":
        return webhook_events.notification_read(
            notification_id=record.notification_id,
            user_id=record.user_id,
            read_at=record.occurred_at,
        )
    assert t.channel is not None  # a channel kind
    return webhook_events.channel_event(
        notification_id=record.notification_id,
        user_id=record.user_id,
        channel=t.channel,
        status=t.to_status,
        attempts=record.attempts or 0,
        last_error=record.last_error,
        provider_id=record.provider_id,
        at=record.occurred_at,
    )


# PostgreSQL: the transitions arrive as one JSON parameter (``_as_json``; ``driver.json_rows``
# says why not eleven arrays); ``transitions`` turns it back into rows; ``recorded`` inserts
# them, as a data-modifying CTE that runs before the outbox's statement
# (``webhooks.pg_emit_after``): one round trip for the rows and their events, the same SQL
# whatever the batch's size. The ids are the server's.
_RECORD_CTES = """
transitions AS (
    SELECT CAST(t->>0 AS uuid) AS notification_id, t->>1 AS user_id, t->>2 AS kind,
           t->>3 AS channel, t->>4 AS from_status, t->>5 AS to_status,
           CAST(t->>6 AS int) AS attempts, CAST(t->>7 AS int) AS latency_ms,
           CAST(t->>8 AS timestamptz) AS occurred_at, t->>9 AS last_error,
           t->>10 AS provider_id
    FROM jsonb_array_elements(CAST(:transitions AS jsonb)) AS t
), recorded AS (
    INSERT INTO notification_transitions (
        id, notification_id, user_id, kind, channel, from_status, to_status, attempts,
        latency_ms, occurred_at)
    SELECT gen_random_uuid(), notification_id, user_id, kind, channel, from_status, to_status,
           attempts, latency_ms, occurred_at
    FROM transitions
    RETURNING 1
)"""
# The channel events (``webhook_events.channel_event``'s ``data``) built by the statement from
# the same rows, rather than as event objects and JSON in Python (bench/RESULTS.md, "Cheaper
# transitions A/B"). The jsonb is the one the Python JSON made, so the bodies a receiver gets
# are the same bytes.
_CHANNEL_EVENT_TYPES = ", ".join(f"'{status}'" for status in webhook_events.CHANNEL_EVENTS)
_CHANNEL_EVENTS_SQL = f"""
    SELECT gen_random_uuid(), 'notification.' || c.to_status,
           jsonb_build_object(
               'id', CAST(c.notification_id AS text), 'user_id', c.user_id,
               'channel', c.channel, 'status', c.to_status,
               'attempts', coalesce(c.attempts, 0),
               'last_error', c.last_error, 'provider_id', c.provider_id),
           c.occurred_at
    FROM transitions AS c
    WHERE c.channel IS NOT NULL AND c.to_status IN ({_CHANNEL_EVENT_TYPES})"""
_PG_RECORD_AND_EMIT = pg_emit_after(_RECORD_CTES, more_events=_CHANNEL_EVENTS_SQL)


def pg_record_after(
    ctes: str, *, settled_events: str | None = None, also_select: str = ""
) -> TextClause:
    """``record_transitions``' PostgreSQL statement after a writer's own data-modifying CTEs
    (``name AS (UPDATE …)``), so that the change and its record are one round trip
    (``outcome_pg``'s write-back, the enqueue's fast path). Its result is the number of webhook
    deliveries created; its parameters ``pg_record_params``' and the CTEs' own.
    ``settled_events``: a SELECT of the ``notification.settled`` events (as
    ``webhooks.pg_emit_after``'s ``more_events``) that the writer's statement builds itself
    from the ``transitions`` rows; then ``pg_record_params`` must be told (``settled_in_sql``).
    ``also_select``: further columns of its final SELECT (``webhooks.pg_emit_after``)."""
    more = _CHANNEL_EVENTS_SQL
    if settled_events is not None:
        more = f"{more}\n    UNION ALL {settled_events}"
    return pg_emit_after(f"{ctes},{_RECORD_CTES}", more_events=more, also_select=also_select)


def pg_record_params(
    records: Sequence[TransitionRecord], *, settled_in_sql: bool = False
) -> dict[str, Any]:
    # Only the notification-level events (settled, read) are built here, and the settled ones
    # not when the statement builds them; the channel events are the statement's.
    events = [
        event
        for record in records
        if record.transition.channel is None
        and not (settled_in_sql and record.transition.kind == SETTLED_KIND)
        and (event := _event(record)) is not None
    ]
    params = pg_emit_params(events)
    params["transitions"] = _as_json(records)
    return params


def _as_json(records: Sequence[TransitionRecord]) -> str:
    """``transitions``' parameter: one array per record, in ``_RECORD_CTES``' order."""
    return json_rows(
        (
            r.notification_id,
            r.user_id,
            (t := r.transition).kind,
            t.channel,
            t.from_status,
            t.to_status,
            r.attempts if t.channel is not None else None,
            r.latency_ms,
            r.occurred_at,
            r.last_error,
            r.provider_id,
        )
        for r in records
    )


def _row(record: TransitionRecord) -> dict[str, Any]:
    t = record.transition
    return {
        "id": uuid.uuid4(),
        "notification_id": record.notification_id,
        "user_id": record.user_id,
        "kind": t.kind,
        "channel": t.channel,
        "from_status": t.from_status,
        "to_status": t.to_status,
        "attempts": record.attempts if t.channel is not None else None,
        "latency_ms": record.latency_ms,
        "occurred_at": record.occurred_at,
    }


async def record_transitions(connection: Executor, rows: Sequence[TransitionRecord]) -> int:
    """Write ``rows`` and their webhook events in the caller's transaction; the number of
    webhook deliveries created (more than 0: the caller wakes an in-process webhook sender
    after its commit; on PostgreSQL the commit's NOTIFY wakes the others)."""
    if not rows:
        return 0
    bind = connection.get_bind() if isinstance(connection, AsyncSession) else connection
    if bind.dialect.name == "postgresql":
        params = pg_record_params(rows)
        return int((await connection.execute(_PG_RECORD_AND_EMIT, params)).scalar_one())
    await connection.execute(insert(NotificationTransition), [_row(record) for record in rows])
    events = [event for record in rows if (event := _event(record)) is not None]
    return await emit_events(connection, events)


async def record_in_session(
    session: AsyncSession, rows: Sequence[TransitionRecord], wakeups: Wakeups | None
) -> int:
    """``record_transitions`` in a session's transaction, and the in-process webhook sender
    woken once it commits (docs/architecture.md, "Wake-ups")."""
    created = await record_transitions(session, rows)
    if created and wakeups is not None:
        wakeups.after_commit(session, WEBHOOK_WAKEUP_CHANNEL)
    return created


async def prune_transitions(
    session: AsyncSession, *, older_than: datetime, chunk: int = 5000
) -> int:
    """Delete the history from before ``older_than`` (the worker's hourly housekeeping), a
    chunk per transaction so that none grows with the backlog; the number of rows deleted."""
    old = (
        select(NotificationTransition.id)
        .where(NotificationTransition.occurred_at < older_than)
        .limit(chunk)
    )
    deleted = 0
    while True:
        result = await session.execute(
            delete(NotificationTransition).where(
                NotificationTransition.id.in_(old.scalar_subquery())
            )
        )
        await session.commit()
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        deleted += count
        if count < chunk:
            return deleted
