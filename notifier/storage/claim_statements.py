"""The claim's statements (``dispatch.claim_due`` runs them): lease the first due rows no other
claim holds, most urgent first, and with an ``awaiting`` limit, of those whose sends await I/O
only as many as the worker has free send slots (``docs/architecture.md``, step 4: Claim).

Built with SQLAlchemy once and run as fixed SQL text on the driver (``driver.positional``)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Integer, Select, Update, and_, bindparam, case, func, or_, select, update

from notifier.lifecycle.machine import CLAIMED_STATUSES
from notifier.lifecycle.statuses import AWAITING_SEND
from notifier.models.base import UTCDateTime
from notifier.models.notification import Notification, NotificationDelivery


def _due(*columns: Any) -> Select[Any]:
    """The first ``:batch`` due rows no other claim holds, most urgent first, locked."""
    return (
        select(Notification.id, *columns)
        .where(
            Notification.next_attempt_at.is_not(None),
            Notification.next_attempt_at <= bindparam("now", type_=UTCDateTime()),
        )
        .order_by(Notification.priority_rank, Notification.next_attempt_at)
        .limit(bindparam("batch", type_=Integer()))
        .with_for_update(skip_locked=True)
    )


def claim_statement(returning: tuple[Any, ...]) -> Update:
    """``dispatch.claim_due``'s statement: its values are bound parameters, so it is built
    once."""
    return _claiming(_due().cte("due").c.id, returning=returning)


@functools.cache
def limited_claim_statement(in_place: frozenset[str], returning: tuple[Any, ...]) -> Update:
    """``dispatch.claim_due``'s statement with its ``awaiting`` limit, built once per set of
    channels sent in place. Of the rows ``due`` locks, ``classified`` says which one ``awaits``
    (``EXISTS`` a due channel not in the set: ``dispatch.awaits_io`` in SQL); ``ranked`` numbers
    those in claim order (``row_number() OVER (PARTITION BY awaits …)``), and the ``UPDATE``
    leases the rows with ``NOT awaits OR nth <= :awaiting``. The rows left out were locked only
    until the statement's end."""
    now = bindparam("now", type_=UTCDateTime())
    d = NotificationDelivery
    due = _due(Notification.priority_rank, Notification.next_attempt_at).cte("due")
    # ``awaits`` of the locked rows only: in ``due`` the planner may hash the whole table for it.
    awaits = (
        select(d.notification_id)
        .where(
            d.notification_id == due.c.id,
            or_(*(d.status == bindparam(f"due_{s.value}", s.value) for s in sorted(AWAITING_SEND))),
            or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now),
            *(d.channel != bindparam(f"in_place_{i}", c) for i, c in enumerate(sorted(in_place))),
        )
        .exists()
    )
    classified = select(due, awaits.label("awaits")).cte("classified")
    nth = func.row_number().over(
        partition_by=classified.c.awaits,
        order_by=(classified.c.priority_rank, classified.c.next_attempt_at),
    )
    ranked = select(classified.c.id, classified.c.awaits, nth.label("nth")).cte("ranked")
    limit = bindparam("awaiting", type_=Integer())
    return _claiming(ranked.c.id, or_(~ranked.c.awaits, ranked.c.nth <= limit), returning=returning)


def _claiming(due_id: Any, *conditions: Any, returning: tuple[Any, ...]) -> Update:
    """Lease the rows whose id is ``due_id`` (a CTE's column) and meet ``conditions``,
    returning ``returning``."""
    return (
        update(Notification)
        .where(and_(Notification.id == due_id, *conditions))
        .values(
            lease_owner=bindparam("worker"),
            lease_expires_at=bindparam("until"),
            # Named, not the column's onupdate: that one is computed at execution, by
            # SQLAlchemy, which the driver's path does not go through.
            updated_at=bindparam("now"),
            next_attempt_at=bindparam("until"),
            # The machine's CLAIMED_STATUSES: a waiting row becomes dispatching.
            status=case(
                {before.value: after.value for before, after in CLAIMED_STATUSES.items()},
                value=Notification.status,
                else_=Notification.status,
            ),
        )
        .returning(*returning)
    )
