"""A claimed batch in one task (docs/architecture.md, "The worker's hot path").

    for each claimed notification:
        in place? (every due channel's send awaits nothing, ``sends_in_place``: websocket, the
                   bench's no-op; nothing else to decide first: no expiry, republish, digest,
                   throttle or paused channel)
            decide each due channel (``rules.precheck``) and send it right here
        nothing else to decide, but some send awaits I/O (email, SMS, push)?
            ``workers/awaiting.py``: decided here, a task per send, outcomes in groups
        otherwise: ``NotificationDelivery.process``, a task each, concurrently with the rest
    the outcomes decided in place: one group to the ``OutcomeWriter`` (one waiter for the
    batch, in order), each notification's last outcome carrying its lease release; then their
    after-record hooks (the websocket publishes), concurrently
    a send made in place that failed: its brief retries and its record go the usual way
    (``NotificationDelivery``), after the group is committed; then its lease is released

A send that awaits no I/O costs no task and no future of its own here: one task per
notification and one coalescer future per outcome were most of the no-op worker's time in the
event loop (bench/RESULTS.md). The guarantees are ``workers/delivery.py``'s, kept the same way:
a send that raises is an attempt (``sending.unexpected``) and its retries follow the policy; a
channel whose send cannot be prepared ends ``failed``; the lease is released with the
notification's last outcome (or after it, if that was refused); a record that fails leaves the
lease to run out, as does any other error deciding a notification. A notification sent in place
holds no send slot (``workers/dispatcher.py``): its sends await nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from notifier.channels.base import DeliveryChannel, DeliveryError, Destination, OutgoingMessage
from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.base import utcnow
from notifier.models.notification import AWAITING_SEND, Channel, ChannelStatus
from notifier.storage import dispatch as queries
from notifier.storage.outcome_batch import ChannelOutcome
from workers.awaiting import AwaitingSends, Hook, Observing, follow_ups, observe, release
from workers.delivery import NotificationDelivery
from workers.outcomes import due_since, is_transient_db_error
from workers.rules import NotSent, prepare
from workers.sending import unexpected

log = logging.getLogger("notifier.worker")

_IN_PLACE, _AWAITING = object(), object()  # ``_route``'s answers


def sends_in_place(channel: DeliveryChannel | None) -> bool:
    """Whether the channel's ``send`` awaits nothing (it says so: ``sends_in_place = True``),
    so that a batch may make its sends one after another in its own task."""
    return channel is not None and getattr(channel, "sends_in_place", False) is True


@dataclass(slots=True)
class _Failed:
    """A send made in place that failed: the usual retries and record take it from here."""

    delivery: queries.ClaimedDelivery
    channel: DeliveryChannel
    message: OutgoingMessage
    destination: Destination
    error: DeliveryError


@dataclass(slots=True)
class _Decided:
    """A batch's outcomes decided in place, in order, and what comes after their record."""

    outcomes: list[ChannelOutcome] = field(default_factory=list)
    hooks: list[Hook | None] = field(default_factory=list)  # after_recorded, one per outcome
    observing: list[Observing] = field(default_factory=list)
    failed: dict[uuid.UUID, tuple[queries.ClaimedWork, list[_Failed]]] = field(default_factory=dict)

    def add(self, outcome: ChannelOutcome, hook: Hook | None = None) -> None:
        self.outcomes.append(outcome)
        self.hooks.append(hook)


class BatchDelivery:
    def __init__(self, delivery: NotificationDelivery) -> None:
        self.delivery = delivery
        self.awaiting = AwaitingSends(delivery)

    async def process(self, batch: Sequence[queries.ClaimedWork]) -> None:
        """Deliver a claimed batch; returns once every notification of it is done."""
        now = utcnow()
        in_place: list[queries.ClaimedWork] = []
        awaiting: list[queries.ClaimedWork] = []
        others: list[queries.ClaimedWork] = []
        for work in batch:
            route = self._route(work, now)
            (in_place if route is _IN_PLACE else awaiting if route is _AWAITING else others).append(
                work
            )
        if awaiting and not in_place and not others:  # emails, say: no task more for them
            await self.awaiting.process(awaiting, now)
            return
        separately = [self._process_one(work) for work in others]
        if awaiting:
            separately.append(self.awaiting.process(awaiting, now))
        elsewhere = asyncio.gather(*separately) if separately else None
        cancelled = False
        try:
            if in_place:
                await self._deliver_in_place(in_place, now)
        except asyncio.CancelledError:  # the dispatcher's stop: the others are cancelled too
            cancelled = True
            raise
        finally:
            if elsewhere is not None:
                if cancelled:
                    elsewhere.cancel()
                await elsewhere

    async def _process_one(self, work: queries.ClaimedWork) -> None:
        try:
            await self.delivery.process(work)
        finally:
            self.delivery.slots.finished(work.notification.id)

    def _route(self, work: queries.ClaimedWork, now: datetime) -> object:
        """``_IN_PLACE`` if nothing but sends made in place is due for the notification,
        ``_AWAITING`` if nothing but sends (some awaiting I/O) is, else None: a task of its
        own (``NotificationDelivery.process``)."""
        notification = work.notification
        if notification.expires_at is not None and notification.expires_at <= now:
            return None
        plan = notification.delivery_plan or {}
        if "digest" in plan or "throttle" in plan:
            return None
        channels, breaker = self.delivery.channels, self.delivery.breaker
        due = 0
        route = _IN_PLACE
        for delivery in notification.deliveries:
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
                continue
            if delivery.status == ChannelStatus.SENT and delivery.next_attempt_at is not None:
                if delivery.channel == Channel.WEBSOCKET.value:
                    return None  # a republish is due (``NotificationDelivery``)
                continue
            if delivery.status not in AWAITING_SEND:
                continue
            channel = channels.get(delivery.channel)
            if channel is None or breaker.paused_until(delivery.channel, now) is not None:
                return None
            if not sends_in_place(channel):
                route = _AWAITING
            due += 1
        return route if due > 0 else None

    async def _deliver_in_place(self, batch: list[queries.ClaimedWork], now: datetime) -> None:
        d = self.delivery
        decided = _Decided()
        for work in batch:
            try:
                await self._decide(work, now, decided)
            except Exception:  # as ``process``: the lease runs out, the row is claimed again
                log.exception("dispatch of %s failed", work.notification.id)
        results = await d.outcomes.record_many(decided.outcomes)
        observe(d.observer, decided.observing)
        after: list[Awaitable[object]] = []
        after += follow_ups(d, decided.outcomes, decided.hooks, results)
        after += [self._retry(work, failed) for work, failed in decided.failed.values()]
        if after:
            await asyncio.gather(*after)
        for work in batch:
            d.slots.finished(work.notification.id)

    async def _decide(self, work: queries.ClaimedWork, now: datetime, decided: _Decided) -> None:
        """Decide and send (in place) every due channel of one notification."""
        notification, d = work.notification, self.delivery
        first = len(decided.outcomes)
        failed: list[_Failed] = []
        for delivery in notification.deliveries:
            if delivery.status not in AWAITING_SEND or (
                delivery.next_attempt_at is not None and delivery.next_attempt_at > now
            ):
                continue
            channel = d.channels[delivery.channel]
            prepared = prepare(work, delivery, configured=channel.configured, now=now)
            if isinstance(prepared, NotSent):
                decided.add(ChannelOutcome(notification.id, delivery.channel, prepared.change))
                if prepared.status is not None:
                    self._observing(decided, work, delivery.channel, prepared.status)
                continue
            message, destination = prepared.message, prepared.destination
            started = asyncio.get_running_loop().time()
            try:
                result = await channel.send(message, destination)  # awaits nothing
            except Exception as exc:  # any exception: an attempt (``sending.send_once``)
                error = exc if isinstance(exc, DeliveryError) else unexpected(channel, exc)
                failed.append(_Failed(delivery, channel, message, destination, error))
                continue
            change = ChannelChange(
                ChannelEvent(result.status.value), attempts=1, provider_id=result.provider_id
            )
            decided.add(
                ChannelOutcome(notification.id, delivery.channel, change), result.after_recorded
            )
            self._observing(
                decided, work, delivery.channel, result.status, started=started, tries=1
            )
        if failed:
            decided.failed[notification.id] = (work, failed)  # released after their records
        elif len(decided.outcomes) > first:  # the last outcome gives the lease up with it
            last = decided.outcomes[-1]
            decided.outcomes[-1] = ChannelOutcome(
                last.notification_id, last.channel, last.change, release=True
            )

    @staticmethod
    def _observing(
        decided: _Decided,
        work: queries.ClaimedWork,
        channel: str,
        status: ChannelStatus,
        *,
        started: float | None = None,
        tries: int = 0,
    ) -> None:
        decided.observing.append(
            Observing(channel, status, started, due_since(work.notification), tries)
        )

    async def _retry(self, work: queries.ClaimedWork, failed: list[_Failed]) -> None:
        """The usual retries and record of the sends that failed in place, then the release."""
        d = self.delivery
        try:
            await asyncio.gather(
                *(
                    d.attempt(
                        work,
                        f.delivery,
                        f.channel,
                        f.message,
                        f.destination,
                        release=False,
                        first_error=f.error,
                    )
                    for f in failed
                )
            )
        except Exception as exc:
            if not is_transient_db_error(exc):
                log.exception("dispatch of %s failed", work.notification.id)
            return  # the lease runs out and the row is claimed again; sent channels stay sent
        await release(self.delivery, work.notification.id)
