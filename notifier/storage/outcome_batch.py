"""Record many outcomes (and lease releases) of one worker in one transaction.

``record_outcomes`` takes whatever the worker has gathered meanwhile (``workers/outcome_writer.py``
groups them) and, in one transaction:

1. locks every notification involved, in id order (``SELECT … ORDER BY id FOR UPDATE``), so
   that two batches, or a batch and a lease renewal, cannot deadlock over the same rows;
2. reads them and their channels in a statement of its own, which under READ COMMITTED sees
   every write committed by whoever held a lock before us (see ``dispatch``'s docstring);
3. applies the items in the order they were submitted through the state machine
   (``lifecycle.machine``: ``advance`` for the channel, ``summarize`` for the notification) and
   the lease check: an item is refused unless this worker still holds the lease, except for a
   success, which is recorded whoever holds the row now (the machine never moves a channel
   backwards), so that the new holder does not send it a second time;
4. writes back the rows that changed and records the transitions those changes made, with
   their webhook events: on PostgreSQL in one statement on the driver's connection (the
   worker's held one, or a session's), four round trips in all (``outcome_pg``); on SQLite
   with one executemany ``UPDATE`` per table and ``transitions.record_transitions``.
The rows are plain objects (``outcome_pg.LockedRow``), not ORM instances (their cost).
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from notifier.lifecycle.machine import ChannelChange, ChannelEvent, next_attempt_for
from notifier.lifecycle.statuses import SETTLED
from notifier.models.base import utcnow
from notifier.models.notification import Notification, NotificationDelivery
from notifier.storage import outcome_pg
from notifier.storage.db import is_one_of
from notifier.storage.dispatch import PROVIDER_ID_CHARS
from notifier.storage.driver import HeldConnections, after_failure, driver_of
from notifier.storage.outcome_pg import LockedChannel, LockedRow
from notifier.storage.transitions import (
    TransitionRecord,
    advance_channel,
    record_transitions,
    summarize_notification,
)

# What a worker records whoever holds the row now: the peer took the message.
SUCCESS_EVENTS = frozenset({ChannelEvent.SENT, ChannelEvent.DELIVERED})


@dataclass(frozen=True, slots=True)
class ChannelOutcome:
    """What happened to one channel; with ``release`` (the last channel this worker had to
    send) the same transaction also gives the lease up."""

    notification_id: uuid.UUID
    channel: str
    change: ChannelChange
    release: bool = False


@dataclass(frozen=True, slots=True)
class ReleaseLease:
    """Give the lease up. The row is due again when its earliest waiting channel is (or now,
    with ``immediately``, for a worker that is shutting down mid-work)."""

    notification_id: uuid.UUID
    immediately: bool = False


Outcome = ChannelOutcome | ReleaseLease


async def record_outcomes(
    sessions: async_sessionmaker[AsyncSession],
    items: Sequence[Outcome],
    *,
    worker_id: str,
    on_events: Callable[[], None] | None = None,
    held: HeldConnections | None = None,
) -> list[bool]:
    """Apply ``items`` in one transaction; for each, whether it was recorded (False: the lease
    was taken over, or the notification is gone). ``on_events`` is called after the commit
    when it wrote webhook deliveries (an in-process webhook sender's wake-up). ``held``: the
    worker's connections (PostgreSQL), used instead of a session's."""
    ids = sorted({item.notification_id for item in items})
    records: list[TransitionRecord] = []
    if held is not None:
        async with held.driver() as pair:
            results, emitted = await _record_on_postgres(*pair, items, ids, worker_id, records)
    else:
        results, emitted = await _record_in_session(sessions, items, ids, worker_id, records)
    if emitted and on_events is not None:
        on_events()
    return results


async def _record_in_session(
    sessions: async_sessionmaker[AsyncSession],
    items: Sequence[Outcome],
    ids: list[uuid.UUID],
    worker_id: str,
    records: list[TransitionRecord],
) -> tuple[list[bool], int]:
    async with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            connection, driver = await driver_of(session)
            return await _record_on_postgres(connection, driver, items, ids, worker_id, records)
        async with session.begin():
            connection = await session.connection()
            rows = await _lock_and_load(connection, ids)
            results = _apply_all(items, rows, worker_id, records, in_sql=False)
            changed = [row for row in rows.values() if row.changed]
            return results, await _write_back(connection, changed, records)


async def _record_on_postgres(
    connection: AsyncConnection,
    driver: asyncpg.Connection,
    items: Sequence[Outcome],
    ids: list[uuid.UUID],
    worker_id: str,
    records: list[TransitionRecord],
) -> tuple[list[bool], int]:
    try:  # on the driver's connection, the transaction ours (``outcome_pg``, ``driver``)
        await driver.execute(f"BEGIN; {outcome_pg.lock_sql(ids)}")
        rows = outcome_pg.rows_from(await driver.fetch(outcome_pg.LOAD, ids))
        results = _apply_all(items, rows, worker_id, records, in_sql=True)
        changed = [row for row in rows.values() if row.changed]
        emitted = await outcome_pg.write_back(driver, changed, records) if changed else 0
        await driver.execute("COMMIT")
    except BaseException as exc:
        converted = await after_failure(connection, driver, exc)
        if converted is exc:
            raise
        raise converted from exc
    return results, emitted


def _apply_all(
    items: Sequence[Outcome],
    rows: dict[uuid.UUID, LockedRow],
    worker_id: str,
    records: list[TransitionRecord],
    *,
    in_sql: bool,
) -> list[bool]:
    """``in_sql``: the write-back builds the settled events (PostgreSQL, ``outcome_pg``)."""
    now = utcnow()
    return [
        _apply(item, rows.get(item.notification_id), worker_id, now, records, in_sql)
        for item in items
    ]


@dataclass(frozen=True, slots=True)
class ExternalSettlement:
    """A report from outside the worker on one channel: a WebSocket ack (``ACKED``), a
    provider's status callback (``CONFIRMED``, ``REPORTED_FAILED``)."""

    notification_id: uuid.UUID
    channel: str
    change: ChannelChange


async def settle_externally(
    connection: AsyncConnection, items: Sequence[ExternalSettlement]
) -> tuple[list[bool], int]:
    """Apply ``items`` in the caller's transaction (the caller commits): three statements for
    the batch on PostgreSQL (lock, read, write back with the transitions' record), not three
    per item. For each, whether it moved the channel (False: a duplicate, or a report the
    machine refuses); and the number of webhook deliveries written (see
    ``transitions.record_transitions``)."""
    ids = sorted({i.notification_id for i in items})
    in_sql = connection.dialect.name == "postgresql"
    if in_sql:
        rows = await outcome_pg.lock_and_load(connection, ids)
    else:
        rows = await _lock_and_load(connection, ids)
    now = utcnow()
    results = []
    records: list[TransitionRecord] = []
    for item in items:
        row = rows.get(item.notification_id)
        deliveries = row.deliveries if row is not None else []
        delivery = next((d for d in deliveries if d.channel == item.channel), None)
        if row is None or delivery is None:
            results.append(False)
            continue
        if not advance_channel(row, delivery, item.change, now, records).applied:
            results.append(False)  # refused: nothing is written
            continue
        delivery.changed = True
        leased = row.lease_owner is not None
        if not leased:
            row.next_attempt_at = next_attempt_for(row, now)
        summarize_notification(row, now, records, leased=leased, settled_in_sql=in_sql)
        row.changed = True
        results.append(True)
    changed = [row for row in rows.values() if row.changed]
    return results, await _write_back(connection, changed, records)


# SQLite's lock and load (PostgreSQL's are ``outcome_pg``'s): BEGIN IMMEDIATE already holds
# the only write lock, so these only read.
# SELECT id, status, … FROM notifications WHERE id IN (…) ORDER BY id
@functools.cache
def _lock_statement(dialect: str) -> Select[*tuple[Any, ...]]:
    return (
        select(
            Notification.id,
            Notification.user_id,
            Notification.send_at,
            Notification.created_at,
            Notification.status,
            Notification.retry_count,
            Notification.updated_at,
            Notification.expires_at,
            Notification.next_attempt_at,
            Notification.lease_owner,
            Notification.lease_expires_at,
        )
        .where(is_one_of(Notification.id, "ids", dialect))
        .order_by(Notification.id)
    )


# SELECT notification_id, channel, status, … FROM notification_deliveries
# WHERE notification_id IN (…)
@functools.cache
def _channels_statement(dialect: str) -> Select[*tuple[Any, ...]]:
    return select(
        NotificationDelivery.notification_id,
        NotificationDelivery.channel,
        NotificationDelivery.status,
        NotificationDelivery.attempts,
        NotificationDelivery.last_error,
        NotificationDelivery.provider_id,
        NotificationDelivery.unknown_outcomes,
        NotificationDelivery.next_attempt_at,
        NotificationDelivery.updated_at,
    ).where(is_one_of(NotificationDelivery.notification_id, "ids", dialect))


async def _lock_and_load(
    connection: AsyncConnection, ids: list[uuid.UUID]
) -> dict[uuid.UUID, LockedRow]:
    # Both statements are built once: building one per batch cost more than running it.
    dialect = connection.dialect.name
    locked = await connection.execute(_lock_statement(dialect), {"ids": ids})
    rows = {row.id: LockedRow(*row) for row in locked}
    if rows:
        channels = await connection.execute(_channels_statement(dialect), {"ids": list(rows)})
        for channel in channels:
            rows[channel.notification_id].deliveries.append(LockedChannel(*channel))  # in order
    return rows


def _apply(
    item: Outcome,
    row: LockedRow | None,
    worker_id: str,
    now: datetime,
    records: list[TransitionRecord],
    in_sql: bool,
) -> bool:
    """One item on its loaded row, through the state machine."""
    if row is None:
        return False
    if isinstance(item, ReleaseLease):
        if row.lease_owner != worker_id:
            return False
        _release(row, now, records, immediately=item.immediately, in_sql=in_sql)
        return True
    change = item.change
    if row.lease_owner != worker_id and change.event not in SUCCESS_EVENTS:
        return False
    if item.release and row.lease_owner == worker_id:
        row.lease_owner = row.lease_expires_at = None
    if change.provider_id is not None and len(change.provider_id) > PROVIDER_ID_CHARS:
        # Cut to the column: a push service's Location may be any length, and a record that
        # PostgreSQL refuses would leave a sent message unrecorded, to be sent again.
        change = dataclasses.replace(change, provider_id=change.provider_id[:PROVIDER_ID_CHARS])
    for delivery in row.deliveries:
        if delivery.channel == item.channel:
            advance_channel(row, delivery, change, now, records)
            delivery.changed = True
    leased = row.lease_owner is not None
    summarize_notification(row, now, records, leased=leased, settled_in_sql=in_sql)
    if not leased:  # released meanwhile: due again only if other channels still wait
        row.next_attempt_at = next_attempt_for(row, now)
    row.changed = True
    return True


def _release(
    row: LockedRow,
    now: datetime,
    records: list[TransitionRecord],
    *,
    immediately: bool,
    in_sql: bool,
) -> None:
    row.lease_owner = row.lease_expires_at = None
    settled = all(d.status in SETTLED for d in row.deliveries)
    if immediately and not settled:
        row.next_attempt_at = now
    else:
        row.next_attempt_at = next_attempt_for(row, now)
    summarize_notification(row, now, records, leased=False, settled_in_sql=in_sql)
    row.changed = True


# UPDATE notification_deliveries SET status = :status, attempts = :attempts, …
# WHERE notification_id = :notification_id AND channel = :channel   -- executemany
_WRITE_CHANNEL = (
    update(NotificationDelivery)
    .where(
        NotificationDelivery.notification_id == bindparam("k_notification_id"),
        NotificationDelivery.channel == bindparam("k_channel"),
    )
    .values(
        status=bindparam("v_status"),
        attempts=bindparam("v_attempts"),
        last_error=bindparam("v_last_error"),
        provider_id=bindparam("v_provider_id"),
        unknown_outcomes=bindparam("v_unknown_outcomes"),
        next_attempt_at=bindparam("v_next_attempt_at"),
        updated_at=bindparam("v_updated_at"),
    )
)

# UPDATE notifications SET status = :status, retry_count = :retry_count, …
# WHERE id = :id   -- executemany
_WRITE_NOTIFICATION = (
    update(Notification)
    .where(Notification.id == bindparam("k_id"))
    .values(
        status=bindparam("v_status"),
        retry_count=bindparam("v_retry_count"),
        updated_at=bindparam("v_updated_at"),
        next_attempt_at=bindparam("v_next_attempt_at"),
        lease_owner=bindparam("v_lease_owner"),
        lease_expires_at=bindparam("v_lease_expires_at"),
    )
)


async def _write_back(
    connection: AsyncConnection, rows: list[LockedRow], records: list[TransitionRecord]
) -> int:
    """Write the changed rows back and record ``records``; the number of webhook deliveries
    written (``transitions.record_transitions``)."""
    if not rows:
        return 0  # nothing changed: no transitions either
    if connection.dialect.name == "postgresql":
        return await outcome_pg.write_back(connection, rows, records)
    channels = [d for row in rows for d in row.deliveries if d.changed]
    if channels:
        await connection.execute(
            _WRITE_CHANNEL,
            [
                {
                    "k_notification_id": d.notification_id,
                    "k_channel": d.channel,
                    "v_status": d.status,
                    "v_attempts": d.attempts,
                    "v_last_error": d.last_error,
                    "v_provider_id": d.provider_id,
                    "v_unknown_outcomes": d.unknown_outcomes,
                    "v_next_attempt_at": d.next_attempt_at,
                    "v_updated_at": d.updated_at,
                }
                for d in channels
            ],
        )
    await connection.execute(
        _WRITE_NOTIFICATION,
        [
            {
                "k_id": row.id,
                "v_status": row.status,
                "v_retry_count": row.retry_count,
                "v_updated_at": row.updated_at,
                "v_next_attempt_at": row.next_attempt_at,
                "v_lease_owner": row.lease_owner,
                "v_lease_expires_at": row.lease_expires_at,
            }
            for row in rows
        ],
    )
    return await record_transitions(connection, records)
