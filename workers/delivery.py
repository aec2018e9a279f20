"""Delivering one claimed notification: each due channel decided, sent and recorded.

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

The dispatcher's send slot: ``SendSlots.sending`` is told how many channels are due, and
``sent`` after each outcome is known, so the slot can serve the next claim while the last
outcome is being committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.channels.base import (
    DeliveryChannel,
    DeliveryError,
    ProviderAuthError,
    RecipientOptedOut,
    UnknownOutcomeError,
)
from notifier.models.base import utcnow
from notifier.models.notification import AWAITING_SEND, ChannelStatus
from notifier.models.recipient import Recipient
from notifier.storage import dispatch as queries
from workers.breaker import ChannelBreaker
from workers.outcome_writer import OutcomeWriter
from workers.outcomes import (
    DispatchObserver,
    describe,
    is_transient_db_error,
    outgoing,
    reason,
)
from workers.retry import RetryAt, RetryPolicy, decide
from workers.rules import Defer, Skip, destination_for, precheck
from workers.sending import send_briefly_retrying

log = logging.getLogger("notifier.worker")


class SendSlots(Protocol):
    def sending(self, notification_id: uuid.UUID, channels: int) -> None:
        """The notification has this many channels to send now (0: none is due)."""

    def sent(self, notification_id: uuid.UUID) -> None:
        """One of its channels has its outcome (not yet committed)."""


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
        self.breaker = ChannelBreaker(pause_seconds=policy.pause_seconds)
        self._slots = slots

    async def process(self, work: queries.ClaimedWork) -> None:
        """Send every due channel of a claimed notification, record each outcome, release."""
        notification = work.notification
        try:
            now = utcnow()
            if notification.expires_at is not None and notification.expires_at <= now:
                await self._expire(notification)
            else:
                due = [
                    d
                    for d in notification.deliveries
                    if d.status in AWAITING_SEND
                    and (d.next_attempt_at is None or d.next_attempt_at <= now)
                ]
                self._slots.sending(notification.id, len(due))
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

    async def _expire(self, notification: queries.ClaimedNotification) -> None:
        for delivery in notification.deliveries:
            if delivery.status in AWAITING_SEND:
                await self._record(
                    notification.id,
                    delivery.channel,
                    queries.ChannelChange(
                        ChannelStatus.EXPIRED, last_error="expired before it was sent"
                    ),
                )

    async def _deliver(
        self, work: queries.ClaimedWork, delivery: queries.ClaimedDelivery, *, release: bool = False
    ) -> bool:
        """Decide, send and record one channel; True if the record also released the lease."""
        notification, now = work.notification, utcnow()
        channel = self.channels.get(delivery.channel)
        verdict = precheck(
            delivery.channel,
            notification,
            work.recipient,
            configured=channel is not None and channel.configured,
            now=now,
        )
        if isinstance(verdict, Skip):
            recorded = await self._record(
                notification.id,
                delivery.channel,
                queries.ChannelChange(ChannelStatus.SKIPPED, last_error=verdict.reason),
                release=release,
            )
            self._observe(notification, delivery.channel, ChannelStatus.SKIPPED)
            return recorded and release
        if isinstance(verdict, Defer):
            change = queries.ChannelChange(
                ChannelStatus.PENDING, last_error=verdict.reason, next_attempt_at=verdict.until
            )
            return (
                await self._record(notification.id, delivery.channel, change, release=release)
                and release
            )
        assert channel is not None
        paused_until = self.breaker.paused_until(delivery.channel, now)
        if paused_until is not None:
            change = queries.ChannelChange(
                ChannelStatus.RETRYING,
                last_error="channel paused: provider refused our credentials",
                next_attempt_at=paused_until,
            )
            return (
                await self._record(notification.id, delivery.channel, change, release=release)
                and release
            )
        return await self._attempt(work, delivery, channel, release=release)

    async def _attempt(
        self,
        work: queries.ClaimedWork,
        delivery: queries.ClaimedDelivery,
        channel: DeliveryChannel,
        *,
        release: bool,
    ) -> bool:
        notification = work.notification
        message = outgoing(notification, delivery)
        destination = destination_for(notification, work.recipient, work.push_subscriptions)
        attempts_in_round = delivery.attempts - delivery.attempts_at_requeue
        started = asyncio.get_running_loop().time()
        result, tries = await send_briefly_retrying(
            channel,
            message,
            destination,
            policy=self.policy,
            tries_left=self.policy.max_attempts - attempts_in_round,
            send_timeout=self.send_timeout,
        )
        if isinstance(result, DeliveryError):
            status, recorded = await self._record_failure(
                work, delivery, result, tries, attempts_in_round + tries, release=release
            )
            self._observe(notification, delivery.channel, status, started=started, tries=tries)
            return recorded and release
        change = queries.ChannelChange(
            result.status, attempts=tries, provider_id=result.provider_id
        )
        recorded = await self._record(notification.id, delivery.channel, change, release=release)
        self._observe(notification, delivery.channel, result.status, started=started, tries=tries)
        if recorded and result.after_recorded is not None:
            await result.after_recorded()
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

    async def _record_failure(
        self,
        work: queries.ClaimedWork,
        delivery: queries.ClaimedDelivery,
        error: DeliveryError,
        tries: int,
        attempts_in_round: int,
        *,
        release: bool = False,
    ) -> tuple[ChannelStatus, bool]:
        now = utcnow()
        decision = decide(
            self.policy,
            attempts_in_round=attempts_in_round,
            unknown_outcomes=delivery.unknown_outcomes,
            error=error,
            now=now,
            rng=self.rng,
        )
        if isinstance(error, ProviderAuthError):
            paused_until = self.breaker.trip(delivery.channel, now, str(error))
            self.observer.channel_paused(delivery.channel)
            decision = RetryAt(paused_until, f"channel paused: {error}")
        if isinstance(error, RecipientOptedOut):
            await self._mark_sms_opt_out(work.notification.user_id)
        unknown = isinstance(error, UnknownOutcomeError)
        provider_id = error.provider_id if isinstance(error, UnknownOutcomeError) else None
        if isinstance(decision, RetryAt):
            change = queries.ChannelChange(
                ChannelStatus.RETRYING,
                attempts=tries,
                last_error=describe(error),
                next_attempt_at=decision.when,
                unknown_outcome=unknown,
                provider_id=provider_id,
            )
        else:
            status = ChannelStatus.SKIPPED if decision.skipped else ChannelStatus.FAILED
            change = queries.ChannelChange(
                status,
                attempts=tries,
                last_error=reason(decision, error),
                unknown_outcome=unknown,
                provider_id=provider_id,
            )
        recorded = await self._record(
            work.notification.id, delivery.channel, change, release=release
        )
        return change.status, recorded

    async def _mark_sms_opt_out(self, user_id: str) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Recipient)
                .where(Recipient.user_id == user_id)
                .values(sms_opted_out=True, updated_at=utcnow())
            )

    async def _record(
        self,
        notification_id: uuid.UUID,
        channel: str,
        change: queries.ChannelChange,
        *,
        release: bool = False,
    ) -> bool:
        # Returns once the outcome is committed (with others of this moment: OutcomeWriter).
        # The channel is done sending: its slot may serve the next claim meanwhile.
        self._slots.sent(notification_id)
        return await self.outcomes.record(notification_id, channel, change, release=release)


def due_since(notification: queries.ClaimedNotification) -> datetime:
    """When the notification first became due: the metrics' latencies run from here."""
    return notification.send_at or notification.created_at
