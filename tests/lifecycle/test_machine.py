"""The state machine, pair by pair: every (channel status, event) is either allowed with the
status it leads to, or refused — as the matrix below says, written out by hand from the
rules (docs/architecture.md, "The state machine") rather than derived from the code's table."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from notifier.lifecycle.machine import (
    CHANNEL_TRANSITIONS,
    ChannelChange,
    ChannelEvent,
    Transition,
    advance,
    derive_status,
    next_attempt_for,
    read_transition,
    summarize,
)
from notifier.lifecycle.statuses import ChannelStatus, NotificationStatus

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

# Columns, in this order.
EVENTS = [
    ChannelEvent.SENT,
    ChannelEvent.DELIVERED,
    ChannelEvent.ACKED,
    ChannelEvent.CONFIRMED,
    ChannelEvent.REPORTED_FAILED,
    ChannelEvent.RETRY,
    ChannelEvent.DEFERRED,
    ChannelEvent.FAILED,
    ChannelEvent.SKIPPED,
    ChannelEvent.EXPIRED,
    ChannelEvent.CANCELLED,
    ChannelEvent.REQUEUED,
    ChannelEvent.DIGESTED,
    ChannelEvent.PUBLISHED,
    ChannelEvent.REPUBLISHED,
]
# One row per status, one column per event (in EVENTS' order): the status the event leads to,
# or "-" where it is refused. Letters: P pending, R retrying, S sent, D delivered, F failed,
# K skipped, X expired, C cancelled, G digested.
# publ: published at enqueue (a new row only), repub: republished by the worker (sent only).
#             sent deliv acked confm rfail retry defer fail  skip  expir cancl requ  dgst publ repub
MATRIX = """
pending       S    D     D     -     -     R     P     F     K     X     C     -     G    S    -
retrying      S    D     D     -     -     R     P     F     K     X     C     -     -    -    -
sent          -    D     D     D     F     -     -     -     -     -     -     -     -    -    S
delivered     -    -     -     -     -     -     -     -     -     -     -     -     -    -    -
failed        S    D     -     -     -     -     -     -     -     -     -     P     -    -    -
skipped       S    D     -     -     -     -     -     -     -     -     -     -     -    -    -
expired       S    D     -     -     -     -     -     -     -     -     -     -     -    -    -
cancelled     S    D     -     -     -     -     -     -     -     -     -     -     -    -    -
digested      -    -     -     -     -     -     -     -     -     -     -     -     -    -    -
"""
LETTERS = {
    "P": ChannelStatus.PENDING,
    "R": ChannelStatus.RETRYING,
    "S": ChannelStatus.SENT,
    "D": ChannelStatus.DELIVERED,
    "F": ChannelStatus.FAILED,
    "K": ChannelStatus.SKIPPED,
    "X": ChannelStatus.EXPIRED,
    "C": ChannelStatus.CANCELLED,
    "G": ChannelStatus.DIGESTED,
}


def _expected() -> dict[tuple[ChannelStatus, ChannelEvent], ChannelStatus | None]:
    table: dict[tuple[ChannelStatus, ChannelEvent], ChannelStatus | None] = {}
    for line in MATRIX.strip().splitlines():
        status, *cells = line.split()
        assert len(cells) == len(EVENTS), status
        for event, cell in zip(EVENTS, cells, strict=True):
            table[(ChannelStatus(status), event)] = None if cell == "-" else LETTERS[cell]
    return table


EXPECTED = _expected()


def test_the_matrix_names_every_status_and_every_event() -> None:
    assert {status for status, _ in EXPECTED} == set(ChannelStatus)
    assert set(EVENTS) == set(ChannelEvent)


@dataclass
class Row:
    channel: str = "email"
    status: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    provider_id: str | None = None
    unknown_outcomes: int = 0
    next_attempt_at: datetime | None = None
    updated_at: datetime = NOW - timedelta(minutes=1)


@pytest.mark.parametrize(("status", "event"), sorted(EXPECTED), ids=lambda v: str(v))
def test_every_pair(status: ChannelStatus, event: ChannelEvent) -> None:
    row = Row(status=status.value, attempts=1, provider_id="old", last_error="before")
    later = NOW + timedelta(seconds=30)
    step = advance(
        row,
        ChannelChange(
            event, attempts=1, last_error="why", provider_id="p-2", next_attempt_at=later
        ),
        NOW,
    )
    target = EXPECTED[(status, event)]
    assert CHANNEL_TRANSITIONS.get((status, event)) == target
    # The facts of an attempt are kept whether or not the status moves.
    assert row.attempts == 2
    assert row.provider_id == "p-2"
    assert row.updated_at == NOW
    if target is None:
        assert not step.applied
        assert step.transition is None
        assert row.status == status.value
        assert row.last_error == "before"
        return
    assert step.applied
    assert row.status == target.value
    assert row.last_error == "why"
    # A republish due is kept by PUBLISHED alone (the websocket fast path).
    waiting = target in (ChannelStatus.PENDING, ChannelStatus.RETRYING) or (
        event == ChannelEvent.PUBLISHED
    )
    assert row.next_attempt_at == (later if waiting else None)
    if target == status:
        assert step.transition is None
    else:
        assert step.transition == Transition(f"channel.{target.value}", "email", status, target)


def test_nothing_leads_from_a_channel_that_went_out_back_to_waiting() -> None:
    for (status, _), target in CHANNEL_TRANSITIONS.items():
        if status in (ChannelStatus.SENT, ChannelStatus.DELIVERED):
            assert target not in (ChannelStatus.PENDING, ChannelStatus.RETRYING)


def test_an_unknown_outcome_is_counted_even_when_refused() -> None:
    row = Row(status="delivered")
    advance(row, ChannelChange(ChannelEvent.RETRY, attempts=1, unknown_outcome=True), NOW)
    assert (row.status, row.unknown_outcomes, row.attempts) == ("delivered", 1, 1)


@pytest.mark.parametrize(
    ("states", "leased", "expected"),
    [
        (["pending"], False, "pending"),
        (["pending"], True, "dispatching"),
        (["pending", "retrying"], True, "retrying"),
        (["sent", "retrying"], False, "retrying"),
        (["sent", "pending"], False, "pending"),
        (["sent"], False, "delivered"),
        (["delivered", "skipped"], False, "delivered"),
        (["skipped"], False, "skipped"),
        (["skipped", "skipped"], False, "skipped"),
        (["failed"], False, "failed"),
        (["failed", "skipped"], False, "failed"),
        (["failed", "sent"], False, "partially_failed"),
        (["failed", "delivered", "cancelled"], False, "partially_failed"),
        (["cancelled"], False, "cancelled"),
        (["cancelled", "skipped"], False, "cancelled"),
        (["expired", "cancelled"], False, "expired"),
        (["expired", "sent"], False, "delivered"),
        (["cancelled", "delivered"], False, "delivered"),
        # A digested channel went out in its digest: counted as sent.
        (["digested"], False, "delivered"),
        (["sent", "digested"], False, "delivered"),
        (["failed", "digested"], False, "partially_failed"),
        (["digested", "pending"], False, "pending"),
    ],
)
def test_notification_status(states: list[str], leased: bool, expected: str) -> None:
    assert derive_status(states, leased=leased) == NotificationStatus(expected)


@dataclass
class Notification:
    status: str = "dispatching"
    retry_count: int = 0
    updated_at: datetime = NOW
    expires_at: datetime | None = None
    deliveries: list[Row] = field(default_factory=list)


def test_settled_once_when_the_last_channel_finishes() -> None:
    n = Notification(deliveries=[Row("websocket", "sent"), Row("email", "retrying", attempts=3)])
    assert summarize(n, NOW, leased=True).transition is None
    assert (n.status, n.retry_count) == ("retrying", 2)
    n.deliveries[1].status = "delivered"
    step = summarize(n, NOW, leased=True)
    assert step.transition == Transition("notification.settled", None, "retrying", "delivered")
    # Summarising again changes nothing and is no second event.
    assert summarize(n, NOW, leased=False).transition is None


def test_a_settled_notification_that_changes_its_outcome_settles_again() -> None:
    n = Notification(status="delivered", deliveries=[Row("sms", "failed"), Row("email", "sent")])
    step = summarize(n, NOW, leased=False)
    assert step.transition == Transition(
        "notification.settled", None, "delivered", "partially_failed"
    )


def test_dispatching_while_an_escalation_step_waits() -> None:
    step_time = NOW + timedelta(seconds=600)
    n = Notification(
        status="pending",
        deliveries=[Row("websocket", "sent"), Row("email", "pending", next_attempt_at=step_time)],
    )
    summarize(n, NOW, leased=False)
    assert n.status == "dispatching"
    # Seen before the step's time: the step is skipped, the usual summary again.
    n.deliveries[1].status = "skipped"
    step = summarize(n, NOW, leased=False)
    assert n.status == "delivered"
    assert step.transition == Transition("notification.settled", None, "dispatching", "delivered")


def test_a_channel_waiting_for_a_reason_leaves_the_notification_pending() -> None:
    later = NOW + timedelta(seconds=600)
    for reason in ("deferred: quiet hours", "held for digest"):
        n = Notification(
            status="pending",
            deliveries=[
                Row("websocket", "sent"),
                Row("email", "pending", last_error=reason, next_attempt_at=later),
            ],
        )
        summarize(n, NOW, leased=False)
        assert n.status == "pending", reason


def test_next_attempt_is_the_earliest_waiting_channel_capped_by_expiry() -> None:
    soon, later = NOW + timedelta(seconds=5), NOW + timedelta(seconds=50)
    n = Notification(
        deliveries=[Row("email", "retrying", next_attempt_at=later), Row("sms", "sent")]
    )
    assert next_attempt_for(n, NOW) == later
    n.expires_at = soon
    assert next_attempt_for(n, NOW) == soon
    n.deliveries[0].status = "failed"
    assert next_attempt_for(n, NOW) is None


def test_read_is_a_transition_the_first_time_only() -> None:
    assert read_transition(False) == Transition("notification.read", None, "unread", "read")
    assert read_transition(True) is None
