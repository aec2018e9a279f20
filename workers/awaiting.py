"""A claimed batch's sends that await I/O (email, SMS, push…), from the batch's own task
(docs/architecture.md, "The worker's hot path"; ``workers/batch.py`` decides who comes here).

    for each notification (nothing else to decide first: no expiry, republish, digest,
    throttle or paused channel):
        each due channel decided (``rules.precheck``): skipped, deferred, failed to prepare
            -> its outcome at once
        to be sent -> a task of its own for the send and its brief retries
            (``sending.send_briefly_retrying``), then the retry policy's decision on a
            failure (``NotificationDelivery.failure``)
    while sends are out: the outcomes known so far go to the ``OutcomeWriter`` as one group
    (``record_many``: one waiter, in order); the next group is whatever finished meanwhile
    each notification's last outcome carries its lease release

One task per send, as before, but no task per notification, no coalescer future per outcome
and one observer call per group. The guarantees are ``workers/delivery.py``'s: a send that
raises is an attempt (``sending.send_once``); a channel whose send cannot be prepared ends
``failed``; a notification's send slot is given back once each of its sends has its outcome,
before it is committed; the lease is released with the notification's last outcome (or after
it, if that was refused); an outcome that cannot be recorded leaves the lease to run out, and
so does any other error deciding a notification. A stop cancels the sends still out; the
outcomes already known are handed to the writer first, so that what went out is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from notifier.channels.base import DeliveryChannel, DeliveryError, Destination, OutgoingMessage
from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.base import utcnow
from notifier.models.notification import AWAITING_SEND, ChannelStatus
from notifier.storage import dispatch as queries
from notifier.storage.outcome_batch import ChannelOutcome
from workers.delivery import NotificationDelivery, SendSlots
from workers.outcomes import (
    DispatchObserver,
    Observed,
    due_since,
    is_transient_db_error,
)
from workers.rules import NotSent, prepare
from workers.sending import send_briefly_retrying

log = logging.getLogger("notifier.worker")

Hook = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Observing:
    """An outcome to observe once recorded (``DispatchObserver``: due -> recorded)."""

    channel: str
    status: ChannelStatus
    started: float | None  # loop time before the send; None: nothing was sent
    due_since: datetime
    tries: int


def observe(observer: DispatchObserver, observing: Sequence[Observing | None]) -> None:
    """Outcomes to the observer in one call, as recorded now."""
    loop_now, now = asyncio.get_running_loop().time(), utcnow()
    observed = [
        Observed(
            o.channel,
            o.status,
            send_seconds=loop_now - o.started if o.started is not None else 0.0,
            waited_seconds=(now - o.due_since).total_seconds(),
            tries=o.tries,
        )
        for o in observing
        if o is not None
    ]
    if observed:
        observer.outcomes(observed)


async def after_recorded(outcome: ChannelOutcome, hook: Hook) -> None:
    try:
        await hook()
    except Exception:
        # Recorded `sent` already: a client that (re)connects gets it in its replay.
        log.exception("after recording %s of %s", outcome.channel, outcome.notification_id)


def follow_ups(
    delivery: NotificationDelivery,
    outcomes: Sequence[ChannelOutcome],
    hooks: Sequence[Hook | None],
    results: Sequence[bool | Exception],
    *,
    unrecorded: set[uuid.UUID] | None = None,
) -> list[Awaitable[None]]:
    """What a group's record leaves to do, per outcome (``OutcomeWriter.record_many``'s
    results): a failed record is logged (``unrecorded`` collects its notification: its lease
    runs out and the row is claimed again); a release the record did not make is made; a hook
    runs once its outcome is recorded."""
    after: list[Awaitable[None]] = []
    for outcome, hook, recorded in zip(outcomes, hooks, results, strict=True):
        if isinstance(recorded, Exception):
            if unrecorded is not None:
                unrecorded.add(outcome.notification_id)
            if not is_transient_db_error(recorded):
                log.error(
                    "recording %s of %s failed: %r",
                    outcome.channel,
                    outcome.notification_id,
                    recorded,
                )
            continue
        if outcome.release and not recorded:
            after.append(release(delivery, outcome.notification_id))
        if recorded and hook is not None:
            after.append(after_recorded(outcome, hook))
    return after


async def release(delivery: NotificationDelivery, notification_id: uuid.UUID) -> None:
    """Give the lease back; if that fails, the lease runs out and another claim picks the row
    up."""
    try:
        await delivery.outcomes.release(notification_id)
    except Exception as exc:
        log.warning("could not release %s: %s", notification_id, type(exc).__name__)


@dataclass(slots=True)
class _Known:
    """An outcome known, waiting for its group's record."""

    outcome: ChannelOutcome
    last: bool  # the notification's last: its lease release rides on it
    hook: Hook | None = None
    observing: Observing | None = None


@dataclass(slots=True)
class _Send:
    work: queries.ClaimedWork
    delivery: queries.ClaimedDelivery
    channel: DeliveryChannel
    message: OutgoingMessage
    destination: Destination
    started: float


@dataclass
class _Run:
    """One batch's state: outcomes still to come per notification, sends out, outcomes known."""

    left: dict[uuid.UUID, int] = field(default_factory=dict)
    sends: dict[asyncio.Task[_Known], _Send] = field(default_factory=dict)
    done: list[asyncio.Task[_Known]] = field(default_factory=list)
    known: list[_Known] = field(default_factory=list)
    unrecorded: set[uuid.UUID] = field(default_factory=set)  # no release for these
    wake: asyncio.Future[None] | None = None

    def add(self, known: _Known) -> None:
        self.known.append(known)

    def finished(self, task: asyncio.Task[_Known], slots: SendSlots) -> None:
        # Its outcome is known: the send slot serves the next claim even while this batch's
        # task waits for the commit of an earlier group.
        slots.sent(self.sends[task].work.notification.id)
        self.done.append(task)
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


class AwaitingSends:
    def __init__(self, delivery: NotificationDelivery) -> None:
        self.delivery = delivery
        self._recording: set[asyncio.Future[list[bool | Exception]]] = set()  # on a stop

    async def process(self, batch: Sequence[queries.ClaimedWork], now: datetime) -> None:
        """Deliver these notifications; returns once every one of them is done."""
        run = _Run()
        loop = asyncio.get_running_loop()
        try:
            for work in batch:
                self._decide(work, now, run, loop)
            while run.sends or run.done or run.known:
                if not run.done and not run.known:
                    run.wake = loop.create_future()
                    await run.wake
                self._collect(run)
                group, run.known = run.known, []
                await self._record(group, run)
        except asyncio.CancelledError:  # a stop: what is known is recorded, the rest is not
            for task in run.sends:
                task.cancel()
            await asyncio.gather(*run.sends, return_exceptions=True)
            self._collect(run)
            if run.known:
                outcomes = [self._outcome(k, run) for k in run.known]
                recording = asyncio.ensure_future(self.delivery.outcomes.record_many(outcomes))
                self._recording.add(recording)
                recording.add_done_callback(self._recording.discard)
                await asyncio.sleep(0)  # its first step hands them to the writer
            raise
        finally:
            for work in batch:
                self.delivery.slots.finished(work.notification.id)

    def _decide(
        self,
        work: queries.ClaimedWork,
        now: datetime,
        run: _Run,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Decide every due channel of one notification; start the sends."""
        notification, d = work.notification, self.delivery
        due = [
            delivery
            for delivery in notification.deliveries
            if delivery.status in AWAITING_SEND
            and (delivery.next_attempt_at is None or delivery.next_attempt_at <= now)
        ]
        run.left[notification.id] = len(due)
        sending = 0
        try:
            for delivery in due:
                sending += self._decide_channel(work, delivery, now, run, loop)
        except Exception:  # as ``process``: the lease runs out, the row is claimed again
            log.exception("dispatch of %s failed", notification.id)
            run.unrecorded.add(notification.id)
        finally:
            d.slots.sending(notification.id, sending)

    def _decide_channel(
        self,
        work: queries.ClaimedWork,
        delivery: queries.ClaimedDelivery,
        now: datetime,
        run: _Run,
        loop: asyncio.AbstractEventLoop,
    ) -> int:
        d = self.delivery
        channel = d.channels[delivery.channel]
        prepared = prepare(work, delivery, configured=channel.configured, now=now)
        if isinstance(prepared, NotSent):
            self._known(run, work, delivery.channel, prepared.change, prepared.status)
            return 0
        send = _Send(work, delivery, channel, prepared.message, prepared.destination, loop.time())
        task = loop.create_task(self._send(send))
        run.sends[task] = send
        task.add_done_callback(functools.partial(run.finished, slots=d.slots))
        return 1

    def _known(
        self,
        run: _Run,
        work: queries.ClaimedWork,
        channel: str,
        change: ChannelChange,
        status: ChannelStatus | None,
        *,
        hook: Hook | None = None,
        started: float | None = None,
        tries: int = 0,
    ) -> None:
        notification_id = work.notification.id
        left = run.left[notification_id] - 1
        run.left[notification_id] = left
        observing = (
            Observing(channel, status, started, due_since(work.notification), tries)
            if status is not None
            else None
        )
        run.add(
            _Known(ChannelOutcome(notification_id, channel, change), left == 0, hook, observing)
        )

    async def _send(self, s: _Send) -> _Known:
        """Send with the brief retries; the outcome to record (the slot given back)."""
        d = self.delivery
        attempts_in_round = s.delivery.attempts - s.delivery.attempts_at_requeue
        result, tries = await send_briefly_retrying(
            s.channel,
            s.message,
            s.destination,
            policy=d.policy,
            tries_left=d.policy.max_attempts - attempts_in_round,
            send_timeout=d.send_timeout,
        )
        hook: Hook | None = None
        if isinstance(result, DeliveryError):
            status, change = await d.failure(
                s.work, s.delivery, result, tries, attempts_in_round + tries
            )
        else:
            # The channel's SendResult says sent or delivered: the machine's event of that name.
            status, hook = result.status, result.after_recorded
            change = ChannelChange(
                ChannelEvent(result.status.value), attempts=tries, provider_id=result.provider_id
            )
        notification_id = s.work.notification.id
        observing = Observing(
            s.delivery.channel, status, s.started, due_since(s.work.notification), tries
        )
        outcome = ChannelOutcome(notification_id, s.delivery.channel, change)
        return _Known(outcome, False, hook, observing)

    def _collect(self, run: _Run) -> None:
        """The sends that finished: their outcomes join the next group, in the order they came."""
        done, run.done = run.done, []
        for task in done:
            send = run.sends.pop(task)
            notification_id = send.work.notification.id
            if task.cancelled():
                run.unrecorded.add(notification_id)
                continue
            exc = task.exception()
            if exc is not None:  # a bug past the send: the lease runs out
                log.error("dispatch of %s failed: %r", notification_id, exc)
                run.unrecorded.add(notification_id)
                continue
            known = task.result()
            left = run.left[notification_id] - 1
            run.left[notification_id] = left
            known.last = left == 0
            run.add(known)

    @staticmethod
    def _outcome(known: _Known, run: _Run) -> ChannelOutcome:
        outcome = known.outcome
        if not known.last or outcome.notification_id in run.unrecorded:
            return outcome
        return ChannelOutcome(outcome.notification_id, outcome.channel, outcome.change, True)

    async def _record(self, group: list[_Known], run: _Run) -> None:
        if not group:
            return
        d = self.delivery
        outcomes = [self._outcome(known, run) for known in group]
        results = await d.outcomes.record_many(outcomes)
        observe(d.observer, [known.observing for known in group])
        hooks = [known.hook for known in group]
        after = follow_ups(d, outcomes, hooks, results, unrecorded=run.unrecorded)
        if after:
            await asyncio.gather(*after)
