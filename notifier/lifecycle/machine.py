"""The delivery state machine: the one door through which a channel's state changes
(docs/architecture.md, "The state machine").

Pure: no I/O, no clock of its own. Every writer of a channel — the worker recording an
outcome, a WebSocket ack, a provider's status callback, retry and cancel by hand, expiry —
describes what happened as a ``ChannelEvent`` and calls ``advance``. ``CHANNEL_TRANSITIONS``
says, for every (status, event) pair, the status it leads to; a pair that is not in the table
is refused and changes no status (the facts of an attempt — its count, the provider's id — are
kept all the same: an attempt happened whatever its record says).

Each change of status is a ``Transition``, the domain event it represents
(``channel.delivered``, ``notification.settled``, ``notification.read``, …). Storage records
them in the same transaction as the change: the webhook outbox sends them and the operator
console counts them.

The rules the table encodes:
- a channel that went out is never sent again: nothing leads from ``sent`` or ``delivered``
  back to waiting, and ``delivered`` is final;
- a success outranks any other record: a late ``sent``/``delivered`` from a worker whose lease
  ran out, over a channel meanwhile cancelled or given up, says what really happened;
- only a failed channel can be re-queued by hand, and only a waiting one cancelled or expired.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from notifier.lifecycle.statuses import (
    AWAITING_SEND,
    FINISHED,
    SUCCEEDED,
    ChannelStatus,
    NotificationStatus,
)

S = ChannelStatus


class ChannelEvent(StrEnum):
    """What happened to one channel."""

    SENT = "sent"  # the peer took it; a confirmation may follow (push 201, Twilio, a frame)
    DELIVERED = "delivered"  # the peer confirmed it as it took it (SMTP 250)
    ACKED = "acked"  # the user's client acknowledged the websocket frame
    CONFIRMED = "confirmed"  # the provider's status callback reported it delivered
    REPORTED_FAILED = "reported_failed"  # the provider's status callback reported a failure
    RETRY = "retry"  # an attempt failed for a passing reason: try again at a time
    DEFERRED = "deferred"  # not now, and no attempt made (quiet hours): due again later
    FAILED = "failed"  # refused for good, attempts exhausted, or an outcome unknown twice
    SKIPPED = "skipped"  # not to be sent: not configured, opted out, no address, …
    EXPIRED = "expired"  # its expires_at passed before it went out
    CANCELLED = "cancelled"  # cancelled by the producer before it went out
    REQUEUED = "requeued"  # an operator asked for a failed channel to be tried again
    DIGESTED = "digested"  # a held channel's window closed: it went out in the digest
    # The websocket fast path (docs/architecture.md, "WebSocket fast path"): the API publishes
    # a new notification's frame right after the enqueue's commit, the channel `sent` in it,
    # with its republish due at ``next_attempt_at``; past that, unacked, the worker published
    # it once more (no attempt counted).
    PUBLISHED = "published"
    REPUBLISHED = "republished"


E = ChannelEvent

# (status, event) -> the status it leads to. Every pair not listed is refused.
CHANNEL_TRANSITIONS: dict[tuple[ChannelStatus, ChannelEvent], ChannelStatus] = {
    **{
        (waiting, event): target
        for waiting in (S.PENDING, S.RETRYING)
        for event, target in (
            (E.SENT, S.SENT),
            (E.DELIVERED, S.DELIVERED),
            # An ack can overtake the worker's own record of `sent`: it still counts.
            (E.ACKED, S.DELIVERED),
            (E.RETRY, S.RETRYING),
            (E.DEFERRED, S.PENDING),
            (E.FAILED, S.FAILED),
            (E.SKIPPED, S.SKIPPED),
            (E.EXPIRED, S.EXPIRED),
            (E.CANCELLED, S.CANCELLED),
        )
    },
    (S.SENT, E.DELIVERED): S.DELIVERED,
    (S.SENT, E.ACKED): S.DELIVERED,
    (S.SENT, E.CONFIRMED): S.DELIVERED,
    (S.SENT, E.REPORTED_FAILED): S.FAILED,
    (S.PENDING, E.PUBLISHED): S.SENT,
    (S.SENT, E.REPUBLISHED): S.SENT,
    **{
        (given_up, event): target
        for given_up in (S.FAILED, S.SKIPPED, S.EXPIRED, S.CANCELLED)
        for event, target in ((E.SENT, S.SENT), (E.DELIVERED, S.DELIVERED))
    },
    (S.FAILED, E.REQUEUED): S.PENDING,
    # Only a held channel (pending, deferred to after its window) is digested, and a digested
    # one is final: its content went out in the digest, never on its own.
    (S.PENDING, E.DIGESTED): S.DIGESTED,
}

# What a claim does to a notification's status: one that waits becomes `dispatching` while a
# worker holds it; any other keeps its status (a claim of a row whose lease ran out).
CLAIMED_STATUSES: dict[NotificationStatus, NotificationStatus] = {
    NotificationStatus.PENDING: NotificationStatus.DISPATCHING,
    NotificationStatus.RETRYING: NotificationStatus.DISPATCHING,
}


def channel_target(status: ChannelStatus | str, event: ChannelEvent) -> ChannelStatus | None:
    """The status ``event`` leads to from ``status``; None if the table refuses it."""
    return CHANNEL_TRANSITIONS.get((ChannelStatus(status), event))


def events_accepted_in(status: ChannelStatus) -> frozenset[ChannelEvent]:
    return frozenset(event for (state, event) in CHANNEL_TRANSITIONS if state == status)


def states_accepting(event: ChannelEvent) -> frozenset[ChannelStatus]:
    """The statuses in which ``event`` is allowed (for a query's WHERE)."""
    return frozenset(state for (state, e) in CHANNEL_TRANSITIONS if e == event)


@dataclass(frozen=True, slots=True)
class ChannelChange:
    """An event on one channel, with the facts that came with it."""

    event: ChannelEvent
    attempts: int = 0  # tries made, added to the channel's count
    last_error: str | None = None
    provider_id: str | None = None
    # RETRY and DEFERRED: when it is due again; PUBLISHED: when an unacked frame is republished
    next_attempt_at: datetime | None = None
    unknown_outcome: bool = False  # the peer may hold the message (counted; see retry policy)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of status: the domain event storage records with it.

    ``kind`` is ``channel.<status entered>`` for a channel, ``notification.settled`` when the
    whole notification reached a finished status, ``notification.read`` for a read mark."""

    kind: str
    channel: str | None
    from_status: str | None
    to_status: str


@dataclass(frozen=True, slots=True)
class Step:
    """What ``advance`` did: whether the event was taken, and the status change, if any (a
    retry after a retry is taken but changes no status)."""

    applied: bool
    transition: Transition | None = None


REFUSED = Step(applied=False)


class ChannelState(Protocol):
    """One channel as a writer loaded it (a ``notification_deliveries`` row)."""

    channel: str
    status: str
    attempts: int
    last_error: str | None
    provider_id: str | None
    unknown_outcomes: int
    next_attempt_at: datetime | None
    updated_at: datetime


class NotificationState(Protocol):
    """The part of a notification its channels decide."""

    status: str
    retry_count: int
    updated_at: datetime
    expires_at: datetime | None

    @property
    def deliveries(self) -> Sequence[ChannelState]: ...


def advance(channel: ChannelState, change: ChannelChange, now: datetime) -> Step:
    """Apply ``change`` to ``channel`` (in place) as the table allows."""
    channel.attempts += change.attempts
    if change.unknown_outcome:
        channel.unknown_outcomes += 1
    if change.provider_id is not None:
        channel.provider_id = change.provider_id
    channel.updated_at = now
    before = ChannelStatus(channel.status)
    target = CHANNEL_TRANSITIONS.get((before, change.event))
    if target is None:
        return REFUSED
    channel.status = target.value
    channel.last_error = change.last_error
    # Waiting: due again then. PUBLISHED: its republish due then; REPUBLISHED and an ack
    # clear that.
    keeps_due = target in AWAITING_SEND or change.event == E.PUBLISHED
    channel.next_attempt_at = change.next_attempt_at if keeps_due else None
    if target == before:
        return Step(applied=True)
    return Step(True, Transition(f"channel.{target.value}", channel.channel, before, target))


def derive_status(channel_states: Iterable[str], *, leased: bool = False) -> NotificationStatus:
    """The notification's status from its channels' (docs/architecture.md, "Notification").

    Retrying while a channel waits for its next attempt; pending (dispatching while a worker
    holds it) while one waits for its first. Then: partially_failed when one failed and another
    succeeded, failed when one failed and none succeeded; delivered when every channel is sent,
    delivered or skipped and at least one went out; skipped when every channel was skipped;
    otherwise the unsent channels were cancelled or expired.
    """
    states = {ChannelStatus(s) for s in channel_states}
    if S.RETRYING in states:
        return NotificationStatus.RETRYING
    if S.PENDING in states:
        return NotificationStatus.DISPATCHING if leased else NotificationStatus.PENDING
    succeeded = bool(states & SUCCEEDED)
    if S.FAILED in states:
        return NotificationStatus.PARTIALLY_FAILED if succeeded else NotificationStatus.FAILED
    if succeeded:
        return NotificationStatus.DELIVERED
    if states <= {S.SKIPPED}:
        return NotificationStatus.SKIPPED
    if S.EXPIRED in states:
        return NotificationStatus.EXPIRED
    return NotificationStatus.CANCELLED


def summarize(notification: NotificationState, now: datetime, *, leased: bool) -> Step:
    """Recompute the notification's status and retry_count from its channels; the
    ``notification.settled`` transition when it has just reached a finished status."""
    before = notification.status
    # While an escalation step waits its turn the notification is being dispatched, not
    # waiting for a first attempt (docs/architecture.md, "Digest, throttle and escalation").
    in_progress = leased or any(_step_waits(d) for d in notification.deliveries)
    after = derive_status((d.status for d in notification.deliveries), leased=in_progress)
    notification.status = after.value
    notification.retry_count = sum(max(d.attempts - 1, 0) for d in notification.deliveries)
    notification.updated_at = now
    if after == before or after not in FINISHED:
        return Step(applied=True)
    return Step(True, Transition("notification.settled", None, before, after))


def _step_waits(channel: ChannelState) -> bool:
    """An escalation step's channel waiting for its time: the one pending channel that is due
    later and that nothing has touched yet. A quiet-hours deferral or a digest hold says why
    it waits (``last_error``), a requeued channel keeps its last error and attempts, a
    scheduled notification's channels have no time of their own."""
    return (
        channel.status == ChannelStatus.PENDING
        and channel.next_attempt_at is not None
        and channel.last_error is None
        and channel.attempts == 0
    )


def next_attempt_for(notification: NotificationState, now: datetime) -> datetime | None:
    """When a worker must next look at this notification; None once nothing is left to send.
    A ``sent`` channel with a ``next_attempt_at`` waits for its one republish (the websocket
    fast path: an unacked frame is published again when its grace ends)."""
    waiting = [
        d
        for d in notification.deliveries
        if d.status in AWAITING_SEND or (d.status == S.SENT and d.next_attempt_at is not None)
    ]
    if not waiting:
        return None
    due = min((d.next_attempt_at or now) for d in waiting)
    if notification.expires_at is not None:
        due = min(due, notification.expires_at)
    return due


def read_transition(was_read: bool) -> Transition | None:
    """A read mark is a transition the first time only."""
    return None if was_read else Transition("notification.read", None, "unread", "read")
