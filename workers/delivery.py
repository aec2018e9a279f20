"""Delivering one claimed notification: each due channel decided, sent and recorded. The
claimed batch's task hands it here only when more than sends is to be decided (expiry, a
republish, a digest, a throttle, a paused channel): ``workers/batch.py``, ``workers/awaiting.py``
decide and send the rest the same way, and record their outcomes in groups.

    expired?              every waiting channel -> expired
    for each due channel, concurrently:
        precheck (rules)  -> skipped (not configured, opted out), or deferred to the end of
                             the recipient's quiet hours
        channel paused?   -> retrying when the pause ends (the provider refused our credentials)
        send (sending)    -> sent / delivered, or a typed DeliveryError that the retry policy
                             turns into retrying at a time, failed or skipped
    release the lease

Every outcome goes to the ``OutcomeWriter`` and is committed before ``process`` returns; with a
single due channel (the common case) the record and the release share one transaction.

An exception that is not a ``DeliveryError`` never leaves a channel unrecorded (a row left
unrecorded is claimed again when its lease runs out, and sent again, for ever):
- raised by the channel's ``send`` (a library's surprise, a bug): an unknown outcome, as the
  message may have gone out; ``sending.send_once`` converts it, naming the exception, and the
  retry policy tries at most once more (told so: Twilio looks the message up first), then
  ``failed``;
- raised before the send, while deciding and preparing it (the recipient rules over stored
  preferences, quiet hours or time zone; the destination; the outgoing message): ``failed`` at
  once, with ``attempts`` unchanged and ``last_error`` naming the exception. Nothing went out,
  and the same stored data fails the same way on every claim, so a retry would only repeat it;
  once the data is fixed, ``POST /v1/notifications/{id}/retry`` sends it. A channel that
  builds its own message inside ``send`` and knows nothing went out says so itself (email: a
  message that cannot be built is a ``PermanentError`` naming the exception).
What is left to the lease is a record that cannot be written at all (the database unreachable
for longer than the lease): the row comes back, and a success is still recorded by whoever
holds it (``outcome_batch``).

The dispatcher's send slot, held by a notification with a send that awaits I/O (email, SMS,
push: ``workers/dispatcher.py``): ``SendSlots.sending`` is told how many channels are due, and
``sent`` after each outcome is known (before it is committed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.channels.base import (
    DeliveryChannel,
    DeliveryError,
    Destination,
    OutgoingMessage,
    RecipientOptedOut,
    UnknownOutcomeError,
)
from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.base import utcnow
from notifier.models.notification import AWAITING_SEND, Channel, ChannelStatus
from notifier.storage import dispatch as queries
from notifier.storage.provider_reports import mark_sms_opted_out
from workers.breaker import ChannelBreaker
from workers.digest import HELD, digest_decision
from workers.outcome_writer import OutcomeWriter
from workers.outcomes import (
    DispatchObserver,
    describe,
    due_since,
    is_transient_db_error,
    outgoing,
    reason,
)
from workers.retry import RetryAt, RetryPolicy, decide
from workers.rules import NotSent, destination_for, prepare
from workers.sending import send_briefly_retrying
from workers.throttle import THROTTLED, throttled_out

log = logging.getLogger("notifier.worker")


class SendSlots(Protocol):
    def sending(self, notification_id: uuid.UUID, channels: int) -> None:
        """The notification has this many channels to send now (0: none is due)."""

    def sent(self, notification_id: uuid.UUID) -> None:
        """One of its channels has its outcome (not yet committed)."""

    def finished(self, notification_id: uuid.UUID) -> None:
        """The notification is done with (recorded and released, or left to its lease)."""


class NotificationDelivery:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        channels: Mapping[str, DeliveryChannel],
        outcomes: OutcomeWriter,
        slots: SendSlots,
        policy: RetryPolicy,
        observer: DispatchObserver,
        rng: random.Random,
        send_timeout: float,
    ) -> None:
        self.sessions = sessions
        self.channels = channels
        self.outcomes = outcomes
        self.policy = policy
        self.observer = observer
        self.rng = rng
        self.send_timeout = send_timeout
        self.breaker = ChannelBreaker()
        self.slots = slots

    async def process(self, work: queries.ClaimedWork) -> None:
        """Send every due channel of a claimed notification, record each outcome, release."""
        notification = work.notification
        try:
            now = utcnow()
            await self._republish_unacked(work, now)
            if notification.expires_at is not None and notification.expires_at <= now:
                await self._expire(notification)
            else:
                due = [
                    d
                    for d in notification.deliveries
                    if d.status in AWAITING_SEND
                    and (d.next_attempt_at is None or d.next_attempt_at <= now)
                ]
                # Held for (or already gone out in) a digest: not sent on its own
                # (workers/digest.py); past its throttle's limit: skipped (workers/throttle.py).
                taken, digest = await digest_decision(self.sessions, notification, due, now)
                due = [d for d in due if d not in taken]
                held = taken if digest.kind == "held" else []
                throttled = await throttled_out(self.sessions, work, due, now, self.channels)
                self.slots.sending(notification.id, len(due) + len(held))
                for delivery in held:
                    change = ChannelChange(
                        ChannelEvent.DEFERRED, last_error=HELD, next_attempt_at=digest.until
                    )
                    await self._record(notification.id, delivery.channel, change)
                for delivery in throttled:
                    change = ChannelChange(ChannelEvent.SKIPPED, last_error=THROTTLED)
                    await self._record(notification.id, delivery.channel, change)
                    self._observe(notification, delivery.channel, ChannelStatus.SKIPPED)
                due = [d for d in due if d not in throttled]
                if len(due) == 1:  # the common case: record and release in one transaction
                    if await self._deliver(work, due[0], release=True):
                        return
                else:
                    await asyncio.gather(*(self._deliver(work, d) for d in due))
        except Exception as exc:
            if not is_transient_db_error(exc):
                log.exception("dispatch of %s failed", notification.id)
            # The lease runs out and the row is claimed again; sent channels stay sent.
            return
        try:
            await self.outcomes.release(notification.id)
        except Exception as exc:  # the lease runs out and another claim picks the row up
            log.warning("could not release %s: %s", notification.id, type(exc).__name__)

    async def _republish_unacked(self, work: queries.ClaimedWork, now: datetime) -> None:
        """The websocket fast path's safety net: a frame the API published at enqueue and no
        client acked within its grace is published once more (``REPUBLISHED``: no attempt
        counted, the republish no longer due), after that is recorded. A channel acked
        meanwhile is ``delivered``, not ``sent``: never published again from here."""
        for delivery in work.notification.deliveries:
            if not (
                delivery.channel == Channel.WEBSOCKET.value
                and delivery.status == ChannelStatus.SENT
                and delivery.next_attempt_at is not None
                and delivery.next_attempt_at <= now
            ):
                continue
            channel = self.channels.get(delivery.channel)
            if channel is None:  # not a channel this worker runs: the replay covers it
                continue
            message = outgoing(work.notification, delivery)
            destination = destination_for(work.notification, work.recipient, ())
            result = await channel.send(message, destination)
            change = ChannelChange(ChannelEvent.REPUBLISHED)
            recorded = await self.outcomes.record(work.notification.id, delivery.channel, change)
            if recorded and result.after_recorded is not None:
                await result.after_recorded()

    async def _expire(self, notification: queries.ClaimedNotification) -> None:
        for delivery in notification.deliveries:
            if delivery.status in AWAITING_SEND:
                await self._record(
                    notification.id,
                    delivery.channel,
                    ChannelChange(ChannelEvent.EXPIRED, last_error="expired before it was sent"),
                )

    async def _deliver(
        self, work: queries.ClaimedWork, delivery: queries.ClaimedDelivery, *, release: bool = False
    ) -> bool:
        """Decide, send and record one channel; True if the record also released the lease."""
        notification, now = work.notification, utcnow()
        channel = self.channels.get(delivery.channel)
        configured = channel is not None and channel.configured
        prepared = prepare(work, delivery, configured=configured, now=now)
        if isinstance(prepared, NotSent):
            recorded = await self._record(
                notification.id, delivery.channel, prepared.change, release=release
            )
            if prepared.status is not None:
                self._observe(notification, delivery.channel, prepared.status)
            return recorded and release
        assert channel is not None
        paused_until = self.breaker.paused_until(delivery.channel, now)
        if paused_until is not None:
            change = ChannelChange(
                ChannelEvent.RETRY,
                last_error="channel paused: provider refused our credentials",
                next_attempt_at=paused_until,
            )
            return (
                await self._record(notification.id, delivery.channel, change, release=release)
                and release
            )
        return await self.attempt(
            work, delivery, channel, prepared.message, prepared.destination, release=release
        )

    async def attempt(
        self,
        work: queries.ClaimedWork,
        delivery: queries.ClaimedDelivery,
        channel: DeliveryChannel,
        message: OutgoingMessage,
        destination: Destination,
        *,
        release: bool,
        first_error: DeliveryError | None = None,
    ) -> bool:
        """Send, record; True if the record also released the lease. ``first_error``: the first
        try was made elsewhere and failed so (``workers/batch.py``): the brief retries, the
        retry policy's decision and the record carry on from it."""
        notification = work.notification
        attempts_in_round = delivery.attempts - delivery.attempts_at_requeue
        started = asyncio.get_running_loop().time()
        result, tries = await send_briefly_retrying(
            channel,
            message,
            destination,
            policy=self.policy,
            tries_left=self.policy.max_attempts - attempts_in_round,
            send_timeout=self.send_timeout,
            first_error=first_error,
        )
        if isinstance(result, DeliveryError):
            status, change = await self.failure(
                work, delivery, result, tries, attempts_in_round + tries
            )
            recorded = await self._record(
                notification.id, delivery.channel, change, release=release
            )
            self._observe(notification, delivery.channel, status, started=started, tries=tries)
            return recorded and release
        # The channel's SendResult says sent or delivered: the machine's event of that name.
        change = ChannelChange(
            ChannelEvent(result.status.value), attempts=tries, provider_id=result.provider_id
        )
        recorded = await self._record(notification.id, delivery.channel, change, release=release)
        self._observe(notification, delivery.channel, result.status, started=started, tries=tries)
        if recorded and result.after_recorded is not None:
            try:
                await result.after_recorded()
            except Exception:
                # Recorded `sent` already: a client that (re)connects gets it in its replay.
                log.exception("after recording %s of %s", delivery.channel, notification.id)
        return recorded and release

    def _observe(
        self,
        notification: queries.ClaimedNotification,
        channel: str,
        status: ChannelStatus,
        *,
        started: float | None = None,
        tries: int = 0,
    ) -> None:
        loop_now = asyncio.get_running_loop().time()
        self.observer.outcome(
            channel,
            status,
            send_seconds=loop_now - started if started is not None else 0.0,
            waited_seconds=(utcnow() - due_since(notification)).total_seconds(),
            tries=tries,
        )

    async def failure(
        self,
        work: queries.ClaimedWork,
        delivery: queries.ClaimedDelivery,
        error: DeliveryError,
        tries: int,
        attempts_in_round: int,
    ) -> tuple[ChannelStatus, ChannelChange]:
        """The retry policy's decision on a send that failed, as the change to record (a
        credentials refusal pauses the channel; an SMS opt-out is stored first)."""
        now = utcnow()
        decision = decide(
            self.policy,
            attempts_in_round=attempts_in_round,
            unknown_outcomes=delivery.unknown_outcomes,
            error=error,
            now=now,
            rng=self.rng,
        )
        if isinstance(decision, RetryAt) and decision.pauses_channel:
            self.breaker.trip(delivery.channel, now, decision.when, str(error))
            self.observer.channel_paused(delivery.channel)
        if isinstance(error, RecipientOptedOut):
            # Before the record: whoever sees the channel failed finds the opt-out stored.
            await self._mark_sms_opt_out(work.notification.user_id)
        when: datetime | None = None
        if isinstance(decision, RetryAt):
            status, event, last_error = ChannelStatus.RETRYING, ChannelEvent.RETRY, describe(error)
            when = decision.when
        elif decision.skipped:
            status, event = ChannelStatus.SKIPPED, ChannelEvent.SKIPPED
            last_error = reason(decision, error)
        else:
            status, event = ChannelStatus.FAILED, ChannelEvent.FAILED
            last_error = reason(decision, error)
        unknown = isinstance(error, UnknownOutcomeError)
        return status, ChannelChange(
            event,
            attempts=tries,
            last_error=last_error,
            next_attempt_at=when,
            unknown_outcome=unknown,
            provider_id=error.provider_id if isinstance(error, UnknownOutcomeError) else None,
        )

    async def _mark_sms_opt_out(self, user_id: str) -> None:
        try:
            await mark_sms_opted_out(self.sessions, user_id)
        except Exception as exc:  # their next SMS meets Twilio's 21610 again, and tries again
            log.warning("could not store the SMS opt-out of a recipient: %s", type(exc).__name__)

    async def _record(
        self,
        notification_id: uuid.UUID,
        channel: str,
        change: ChannelChange,
        *,
        release: bool = False,
    ) -> bool:
        # Returns once the outcome is committed (with others of this moment: OutcomeWriter).
        # The channel is done sending: its slot may serve the next claim meanwhile.
        self.slots.sent(notification_id)
        return await self.outcomes.record(notification_id, channel, change, release=release)
