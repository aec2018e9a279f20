"""The queries of dispatch: claim (and load) due rows, renew leases. Recording outcomes and
releasing leases, in batches, is ``outcome_batch``; the rules every writer of a channel follows
are the state machine's (``notifier.lifecycle.machine``).

Every writer of a notification's delivery rows (a worker recording an outcome, a WebSocket ack,
a Twilio callback, a retry or cancel request) first locks the notification row with
``SELECT … FOR UPDATE`` (on SQLite, ``BEGIN IMMEDIATE`` plays that part: see ``db.py``), then
reads its channels in a statement of their own: under READ COMMITTED, a ``SELECT … FOR
UPDATE`` that waited for the lock returns the locked row as the previous holder committed it,
but rows joined to it as they were when the statement started. The per-notification lock makes
each read-modify-write of the channels and the derived status atomic.

A worker's writes are also guarded by its lease: it updates a notification only while
``lease_owner`` is still its id. Once its lease expired and another worker claimed the row, its
late writes are refused, so it cannot overwrite newer state.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import (
    Select,
    Update,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from notifier.lifecycle.statuses import AWAITING_SEND
from notifier.models.base import utcnow
from notifier.models.notification import Notification, NotificationDelivery
from notifier.models.recipient import PushSubscription, Recipient
from notifier.storage.claim_statements import claim_statement, limited_claim_statement
from notifier.storage.db import is_one_of
from notifier.storage.driver import (
    HeldConnections,
    after_failure,
    driver_of,
    positional,
)

PROVIDER_ID_CHARS = 255  # notification_deliveries.provider_id is varchar(255)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """One channel of a claimed notification, as it was when claimed (read-only: outcomes are
    written by ``outcome_batch`` under the row's lock)."""

    channel: str
    status: str
    attempts: int
    attempts_at_requeue: int
    unknown_outcomes: int
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimedNotification:
    """What sending a claimed notification reads: the columns of its row, and its channels.

    Plain objects, not ORM instances: loading 32 ``Notification``s with their channels through
    the ORM cost 5 ms of the worker's CPU per claim, four times the database's own time."""

    id: uuid.UUID
    user_id: str
    title: str
    message: str
    notification_type: str
    priority: str
    channels: list[str]
    is_read: bool
    related_task_id: str | None
    action_url: str | None
    notification_metadata: dict[str, Any]
    recipient: dict[str, Any] | None
    send_at: datetime | None
    expires_at: datetime | None
    created_at: datetime
    # A template's channel parts, rendered at enqueue (None: title and message for all).
    rendered_parts: dict[str, str] | None
    # Digest, throttle and escalation as asked at enqueue (None: none).
    delivery_plan: dict[str, Any] | None
    deliveries: tuple[ClaimedDelivery, ...]


@dataclass(frozen=True, slots=True)
class ClaimedWork:
    notification: ClaimedNotification
    recipient: Recipient | None
    push_subscriptions: tuple[PushSubscription, ...]


# The columns of a claimed row that sending reads: ``ClaimedNotification``'s fields, in order
# (its dataclass is the one list; ``models/shape.py`` FRAME_FIELDS are among them).
_CLAIMED_COLUMNS = tuple(
    getattr(Notification, f.name) for f in fields(ClaimedNotification) if f.name != "deliveries"
)


async def claim_due(
    sessions: async_sessionmaker[AsyncSession],
    *,
    worker_id: str,
    batch_size: int,
    lease_seconds: float,
    held: HeldConnections | None = None,
    awaiting: int | None = None,
    in_place: frozenset[str] = frozenset(),
) -> list[ClaimedWork]:
    """Lease up to ``batch_size`` due notifications to this worker, most urgent first, and load
    what sending them takes: their channels, recipients and (for ``browser``) push
    subscriptions.

    ``awaiting``: of those, at most this many that ``awaits_io`` (a channel due now that is not
    one of ``in_place``, the channels this worker sends without awaiting anything); the others
    among the first ``batch_size`` due are claimed all the same. None: no such limit. The
    worker's send slots bound the former only (``workers/dispatcher.py``).

    The claim, rendered on PostgreSQL as::

        WITH due AS (SELECT id FROM notifications
                     WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= :now
                     ORDER BY priority_rank, next_attempt_at
                     LIMIT :batch
                     FOR UPDATE SKIP LOCKED)
        UPDATE notifications SET lease_owner = :worker, lease_expires_at = :until,
               next_attempt_at = :until, status = CASE … END
        FROM due WHERE notifications.id = due.id
        RETURNING notifications.*

    ``SKIP LOCKED`` lets concurrent workers take disjoint rows without waiting on one another.
    The locking SELECT sits in a CTE (which PostgreSQL evaluates exactly once) rather than in
    ``WHERE id IN (subquery)``, which the planner may re-run and so lock more than ``LIMIT``.
    A claimed row's ``next_attempt_at`` becomes its lease expiry: should this worker die, the
    row is due again when the lease runs out and another worker claims it. Settled rows have a
    NULL ``next_attempt_at`` and sit outside the partial index this scans.

    The ``RETURNING`` rows carry the columns sending reads; their channels come in a second
    statement (``SELECT … FROM notification_deliveries … WHERE notification_id = ANY(…)``),
    which runs after the rows are ours and so reads their channels as they are now. It brings
    each row's recipient along (a left join: one round trip less per claim); a third
    ``SELECT`` reads push subscriptions, only when a claimed row has the ``browser`` channel.

    On PostgreSQL these run without a transaction around them (autocommit): the claim is one
    statement, atomic by itself, and the reads after it need no lock, as the rows are leased to
    this worker by then; what another writer may still do to their channels meanwhile (an ack,
    a cancellation) is committed before our read or after it, and either is handled. That
    saves the BEGIN and COMMIT round trips of every claim. The claim and the read run on the
    asyncpg connection itself (``driver``), as SQL compiled once: one of ``held`` (the
    worker's, PostgreSQL only), or the session's. On SQLite the claim and the reads share one
    ``BEGIN IMMEDIATE`` transaction, SQLite's only kind of write lock.
    """
    now = utcnow()
    until = now + timedelta(seconds=lease_seconds)
    params = {"now": now, "batch": batch_size, "worker": worker_id, "until": until}
    statement = _CLAIM
    if awaiting is not None and awaiting < batch_size:
        statement, params["awaiting"] = (
            limited_claim_statement(in_place, _CLAIMED_COLUMNS),
            awaiting,
        )
    if held is not None:
        async with held.driver() as (connection, driver):
            notifications, recipients = await _claim_guarded(connection, driver, statement, params)
        if not _wanting_push(notifications):
            return _works(notifications, recipients, {})
        async with sessions() as session:
            return await _with_push_subscriptions(session, notifications, recipients, "postgresql")
    async with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            connection, driver = await driver_of(session)
            notifications, recipients = await _claim_guarded(connection, driver, statement, params)
            return await _with_push_subscriptions(session, notifications, recipients, "postgresql")
        async with session.begin():
            return await _claim(session, statement, params)


def awaits_io(notification: ClaimedNotification, in_place: frozenset[str], now: datetime) -> bool:
    """Whether a channel of the notification is due now that is not one of ``in_place``: the
    claim's ``awaiting`` limit counts these (its SQL asks the same of the stored rows)."""
    return any(
        d.status in AWAITING_SEND
        and (d.next_attempt_at is None or d.next_attempt_at <= now)
        and d.channel not in in_place
        for d in notification.deliveries
    )


async def _claim_guarded(
    connection: AsyncConnection,
    driver: asyncpg.Connection,
    statement: Update,
    params: dict[str, object],
) -> tuple[list[ClaimedNotification], dict[str, Recipient]]:
    try:
        return await _claim_on_driver(driver, statement, params)
    except BaseException as exc:
        converted = await after_failure(connection, driver, exc)
        if converted is exc:
            raise
        raise converted from exc


@functools.cache
def _claim_on_driver_sql(statement: Update) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    return positional(statement)


# The claimed rows' channels, each with its notification's recipient (the recipient's columns
# repeat per channel: fewer bytes than a round trip).
_RECIPIENT_COLUMNS = tuple(
    (attribute.key, attribute.columns[0].name) for attribute in inspect(Recipient).column_attrs
)
_LOAD_ON_DRIVER = f"""SELECT d.notification_id, d.channel, d.status, d.attempts,
       d.attempts_at_requeue, d.unknown_outcomes, d.next_attempt_at,
       {", ".join(f"r.{name}" for _, name in _RECIPIENT_COLUMNS)}
FROM notification_deliveries AS d JOIN notifications AS n ON n.id = d.notification_id
     LEFT JOIN recipients AS r ON r.user_id = n.user_id
WHERE d.notification_id = ANY($1::uuid[])"""
_DELIVERY_WIDTH = 7


async def _claim_on_driver(
    driver: asyncpg.Connection, statement: Update, params: dict[str, object]
) -> tuple[list[ClaimedNotification], dict[str, Recipient]]:
    sql, names, fixed = _claim_on_driver_sql(statement)
    claimed = await driver.fetch(sql, *(params[n] if n in params else fixed[n] for n in names))
    if not claimed:
        return [], {}
    channels: dict[uuid.UUID, list[ClaimedDelivery]] = {row[0]: [] for row in claimed}
    recipients: dict[str, Recipient] = {}
    for row in await driver.fetch(_LOAD_ON_DRIVER, list(channels)):
        channels[row[0]].append(ClaimedDelivery(*row[1:_DELIVERY_WIDTH]))  # fields in order
        user_id = row[_DELIVERY_WIDTH]
        if user_id is not None and user_id not in recipients:
            # A plain instance, as a loaded one is once its session closes (no relationships).
            values = row[_DELIVERY_WIDTH:]
            recipients[user_id] = Recipient(
                **{key: value for (key, _), value in zip(_RECIPIENT_COLUMNS, values, strict=True)}
            )
    notifications = [
        ClaimedNotification(*row, tuple(channels[row[0]]))  # type: ignore[call-arg]
        for row in claimed
    ]
    return notifications, recipients


async def _claim(
    session: AsyncSession, statement: Update, params: dict[str, object]
) -> list[ClaimedWork]:
    connection = await session.connection()
    claimed = (await connection.execute(statement, params)).all()
    if not claimed:
        return []
    dialect = connection.dialect.name
    channels: dict[uuid.UUID, list[ClaimedDelivery]] = {row[0]: [] for row in claimed}
    recipients: dict[str, Recipient] = {}
    loaded = await session.execute(_channels_and_recipients_of(dialect), {"ids": list(channels)})
    for *delivery, recipient in loaded:
        channels[delivery[0]].append(ClaimedDelivery(*delivery[1:]))  # fields in order
        if recipient is not None:
            recipients[recipient.user_id] = recipient
    # A claimed row holds _CLAIMED_COLUMNS: ClaimedNotification's fields, in order, but for
    # the channels (mypy cannot count a Row's columns).
    notifications = [
        ClaimedNotification(*row, tuple(channels[row[0]]))  # type: ignore[call-arg]
        for row in claimed
    ]
    return await _with_push_subscriptions(session, notifications, recipients, dialect)


# SELECT d.notification_id, d.channel, d.status, …, r.*
# FROM notification_deliveries d JOIN notifications n ON n.id = d.notification_id
#      LEFT JOIN recipients r ON r.user_id = n.user_id
# WHERE d.notification_id IN (…)
@functools.cache
def _channels_and_recipients_of(dialect: str) -> Select[*tuple[Any, ...]]:
    return (
        select(
            NotificationDelivery.notification_id,
            NotificationDelivery.channel,
            NotificationDelivery.status,
            NotificationDelivery.attempts,
            NotificationDelivery.attempts_at_requeue,
            NotificationDelivery.unknown_outcomes,
            NotificationDelivery.next_attempt_at,
            Recipient,
        )
        .select_from(NotificationDelivery)
        .join(Notification, Notification.id == NotificationDelivery.notification_id)
        .outerjoin(Recipient, Recipient.user_id == Notification.user_id)
        .where(is_one_of(NotificationDelivery.notification_id, "ids", dialect))
    )


@functools.cache
def _push_subscriptions_of(dialect: str) -> Select[PushSubscription]:
    return select(PushSubscription).where(is_one_of(PushSubscription.user_id, "users", dialect))


async def _with_push_subscriptions(
    session: AsyncSession,
    notifications: list[ClaimedNotification],
    recipients: dict[str, Recipient],
    dialect: str,
) -> list[ClaimedWork]:
    wants_push = _wanting_push(notifications)
    subscriptions: dict[str, list[PushSubscription]] = {}
    if wants_push:
        query_push = _push_subscriptions_of(dialect)
        for sub in await session.scalars(query_push, {"users": wants_push}):
            subscriptions.setdefault(sub.user_id, []).append(sub)
    return _works(notifications, recipients, subscriptions)


def _wanting_push(notifications: list[ClaimedNotification]) -> list[str]:
    # The deliveries, not ``channels``: an escalation step's browser channel is a delivery only.
    return list(
        {n.user_id for n in notifications if any(d.channel == "browser" for d in n.deliveries)}
    )


def _works(
    notifications: list[ClaimedNotification],
    recipients: dict[str, Recipient],
    subscriptions: dict[str, list[PushSubscription]],
) -> list[ClaimedWork]:
    return [
        ClaimedWork(n, recipients.get(n.user_id), tuple(subscriptions.get(n.user_id, ())))
        for n in notifications
    ]


_CLAIM = claim_statement(_CLAIMED_COLUMNS)


async def next_due_at(session: AsyncSession) -> datetime | None:
    """When the earliest unsettled notification is due (for an idle worker's sleep)."""
    query = select(func.min(Notification.next_attempt_at)).where(
        Notification.next_attempt_at.is_not(None)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def queue_depth(session: AsyncSession) -> dict[str, int]:
    """Unsettled notifications by status (the partial index keeps this cheap)."""
    query = (
        select(Notification.status, func.count())
        .where(Notification.next_attempt_at.is_not(None))
        .group_by(Notification.status)
    )
    return {status: int(count) for status, count in (await session.execute(query)).all()}


async def renew_leases(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, worker_id: str, lease_seconds: float
) -> int:
    """Extend the leases this worker still holds on ``ids`` (work still in flight).

    The rows are locked in id order first, as the outcome writer locks its batches
    (``outcome_batch``): two transactions that each lock several rows in the same order cannot
    deadlock, whereas a bare ``UPDATE … WHERE id IN (…)`` locks in whatever order its plan
    visits them."""
    if not ids:
        return 0
    until = utcnow() + timedelta(seconds=lease_seconds)
    mine = (
        select(Notification.id)
        .where(Notification.id.in_(ids), Notification.lease_owner == worker_id)
        .order_by(Notification.id)
        .with_for_update()
        .cte("mine")
    )
    result = await session.execute(
        update(Notification)
        .where(Notification.id == mine.c.id)
        .values(lease_expires_at=until, next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
