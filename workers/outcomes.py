"""What the dispatcher writes down, and how it gets it written through a brief database outage.

Recording an outcome is the one write that must not be lost: a success that is not recorded is
sent again once the lease runs out (a duplicate email for the recipient). So an outcome's short
transaction is retried, with Tenacity, on errors that say "the database cannot take this right
now" (connection lost or refused, too many connections, shutting down, a deadlock or
serialization failure: ``storage/db.py`` ``classify``) for as long as the lease would keep the
row ours anyway.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from notifier.channels.base import DeliveryError, OutgoingMessage
from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.notification import ChannelStatus
from notifier.settings import Settings
from notifier.storage.db import is_transient
from notifier.storage.dispatch import ClaimedDelivery, ClaimedNotification
from workers.retry import GiveUp, RetryPolicy

T = TypeVar("T")

log = logging.getLogger("notifier.worker")


@dataclass(frozen=True, slots=True)
class Observed:
    """One channel's outcome, as recorded: what ``DispatchObserver.outcomes`` is told."""

    channel: str
    status: ChannelStatus
    send_seconds: float
    waited_seconds: float
    tries: int


class DispatchObserver(Protocol):
    """Hooks for metrics; every method must be cheap and must not raise. The bodies record
    nothing: ``NoObserver`` is this protocol as it stands."""

    def claimed(self, waited_seconds: Sequence[float]) -> None:
        """One entry per notification just claimed: how long it had been due."""
        return None

    def outcome(
        self,
        channel: str,
        status: ChannelStatus,
        *,
        send_seconds: float,
        waited_seconds: float,
        tries: int,
    ) -> None:
        return None

    def outcomes(self, observed: Sequence[Observed]) -> None:
        """A batch's outcomes at once (``workers/batch.py``): as ``outcome`` for each."""
        return None

    def channel_paused(self, channel: str) -> None:
        return None


class NoObserver(DispatchObserver):
    """Records nothing (tests, and the bench's no-op worker)."""


def is_transient_db_error(exc: BaseException) -> bool:
    """Worth running the transaction again: ``storage/db.py``'s one ``classify``."""
    return is_transient(exc)


async def with_db_retries(operation: Callable[[], Awaitable[T]], *, within: float) -> T:
    """Run ``operation`` (one short transaction), again on transient database errors, for up
    to ``within`` seconds; the last error is raised.

    The first try runs on its own: nearly every flush succeeds at once, and setting Tenacity's
    controller up cost ~18 µs a flush. Only after a transient failure does Tenacity take over,
    with that failure as its first attempt and the deadline counted from the first try, so the
    schedule, the deadline and the error raised are the same as if it had made the first try
    itself (as ``sending.send_briefly_retrying`` does for a send)."""
    started = time.monotonic()
    try:
        return await operation()
    except Exception as exc:
        if not is_transient_db_error(exc):
            raise
        first: Exception | None = exc

    async def again() -> T:
        nonlocal first
        if first is not None:
            error, first = first, None
            raise error  # attempt 1, already made
        return await operation()

    retrying = AsyncRetrying(
        stop=stop_after_delay(max(within - (time.monotonic() - started), 0.0)),
        wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
        retry=retry_if_exception(is_transient_db_error),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await again()
    raise AssertionError("unreachable")  # reraise=True: the loop returns or raises


def policy_from(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        base_seconds=settings.retry_base_seconds,
        max_seconds=settings.retry_max_seconds,
        pause_seconds=settings.breaker_seconds,
    )


def describe(error: DeliveryError) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


def reason(decision: GiveUp, error: DeliveryError) -> str:
    return (
        decision.reason[:2000]
        if decision.skipped
        else f"{type(error).__name__}: {decision.reason}"[:2000]
    )


# What a message copies from the claimed row as is: the fields the two share by name.
_COPIED = tuple(
    f.name
    for f in dataclasses.fields(OutgoingMessage)
    if f.name in {c.name for c in dataclasses.fields(ClaimedNotification)}
)


def outgoing(notification: ClaimedNotification, delivery: ClaimedDelivery) -> OutgoingMessage:
    """The message a channel sends, from the claimed row (docs/architecture.md, "Notification
    shape"): every field the two share by name, plus the two that are named differently."""
    return OutgoingMessage(
        notification_id=notification.id,
        metadata=dict(notification.notification_metadata or {}),
        previous_attempts=delivery.attempts,
        after_unknown_outcome=delivery.unknown_outcomes > 0,
        **{name: getattr(notification, name) for name in _COPIED},
        parts=notification.rendered_parts or {},
    )


def unprepared(channel: str, notification: ClaimedNotification, exc: Exception) -> ChannelChange:
    """A channel whose send could not be prepared: ``failed``, naming the exception (logged)."""
    log.exception("could not prepare %s of %s", channel, notification.id)
    return ChannelChange(
        ChannelEvent.FAILED,
        last_error=f"not sent: {type(exc).__name__} before sending: {exc}"[:2000],
    )


def due_since(notification: ClaimedNotification) -> datetime:
    """When the notification first became due: the metrics' latencies run from here."""
    return notification.send_at or notification.created_at
