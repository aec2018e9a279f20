"""The dispatch loop: claim due notifications, send their channels, record each outcome.

    while not stopping:
        claim up to min(batch, free slots) due rows under a lease   (storage.dispatch.claim_due)
        the batch, in one task: send every due channel (in place where the send awaits
                  nothing, concurrently where it does), record the outcomes, release the
                  leases                                 (batch, delivery, outcome_writer)
        idle? wait for a NOTIFY wake-up, the next due time, the poll interval, or the stop

Outcomes go through the ``OutcomeWriter``: each waits until it is committed, but the outcomes of
all notifications finishing at about the same time share one transaction.

A send slot (``WORKER_CONCURRENCY``) bounds the notifications whose sends await I/O (a due
email, SMS or push: the relay's and the provider's capacity): it is taken at the claim and given
back once the notification's last channel has its outcome, before that outcome is committed. So
the next claim overlaps the commit of the last batch instead of waiting for it (the claim and
the flush used to alternate, and a notification arriving meanwhile waited for both). The claim
asks for at most the free slots' worth of those (``claim_due``'s ``awaiting``): it never holds
rows that would wait here for a slot while their leases run. After a claim of those only (an
email drain), it asks for the free slots' worth and no more (``_claim_some``). A notification
whose due channels are all sent in place (``sends_in_place``: websocket, the bench's no-op)
takes no slot: its sends await nothing, and what bounds it is the claim (``WORKER_BATCH_SIZE``)
and the room for notifications in flight: the slots plus one outcome batch
(``OutcomeWriter.max_batch``). Past that, the records are what is slow, and claiming more
would only queue them.

A background task renews the leases of rows still in flight. On stop the loop claims nothing
more, lets in-flight sends finish for up to ``drain_seconds``, and hands back what remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notifier.channels.base import DeliveryChannel
from notifier.models.base import utcnow
from notifier.settings import Settings
from notifier.storage import dispatch as queries
from notifier.storage.driver import HeldConnections
from workers.batch import BatchDelivery, sends_in_place
from workers.delivery import NotificationDelivery
from workers.outcome_writer import OutcomeWriter
from workers.outcomes import (
    DispatchObserver,
    NoObserver,
    due_since,
    is_transient_db_error,
    policy_from,
)
from workers.retry import RetryPolicy
from workers.wakeup import Wakeup

log = logging.getLogger("notifier.worker")


class Dispatcher:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        channels: Mapping[str, DeliveryChannel],
        wakeup: Wakeup,
        worker_id: str | None = None,
        policy: RetryPolicy | None = None,
        observer: DispatchObserver | None = None,
        rng: random.Random | None = None,
        send_timeout: float = 60.0,
        drain_seconds: float | None = None,
        on_webhook_events: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.wakeup = wakeup
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self.observer: DispatchObserver = observer or NoObserver()
        self.drain_seconds = (
            drain_seconds if drain_seconds is not None else min(settings.lease_seconds, 25.0)
        )
        # The claim and the flushes run on connections kept checked out (PostgreSQL): one for
        # the claim, one per concurrent flush.
        bind = sessions.kw.get("bind")
        self._held = (
            HeldConnections(bind, keep=3)
            if isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql"
            else None
        )
        self.outcomes = OutcomeWriter(
            sessions,
            held=self._held,
            worker_id=self.worker_id,
            lease_seconds=settings.lease_seconds,
            # SQLite has one writer at a time: a second flush would only wait for its lock.
            concurrency=1 if settings.is_sqlite else 2,
            success_lane=not settings.is_sqlite,
            # Outcomes that wrote webhook events wake this process's sender (on PostgreSQL the
            # commit's NOTIFY wakes every sender as well).
            on_events=on_webhook_events,
        )
        self.delivery = NotificationDelivery(
            sessions=sessions,
            channels=channels,
            outcomes=self.outcomes,
            slots=self,
            policy=policy or policy_from(settings),
            observer=self.observer,
            rng=rng or random.Random(),
            send_timeout=send_timeout,
        )
        self.batch = BatchDelivery(self.delivery)
        # The channels this worker sends in place: their notifications take no send slot.
        self._in_place = frozenset(name for name, c in channels.items() if sends_in_place(c))
        self._in_flight: dict[uuid.UUID, asyncio.Task[None]] = {}
        # Of those, the ones holding a send slot: how many of their channels are still to be
        # sent (see the module's docstring).
        self._sending: dict[uuid.UUID, int] = {}
        self._max_in_flight = settings.worker_concurrency + self.outcomes.max_batch
        # The last claim left due rows behind for want of a send slot (it may have).
        self._held_back = False
        # The last claim's rows all awaited I/O (``_claim_some``).
        self._only_awaiting = False
        self._progress = asyncio.Event()  # a slot was given back or a notification finished
        self._next_due: asyncio.Task[datetime | None] | None = None
        self.idle = asyncio.Event()

    # --- the loop ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        renewer = asyncio.create_task(self._renew_leases_forever(), name="lease-renewer")
        try:
            while not stop.is_set():
                # A full claim may have left more due rows behind: claim again at once. After a
                # partial one the wait below returns at once if new work was announced meanwhile.
                if await self._claim_some() and self._room() > 0:
                    continue
                self.idle.set() if not self._in_flight else self.idle.clear()
                await self._wait(stop)
        finally:
            await self._drain()
            for task in (renewer, self._next_due):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._held is not None:
                await self._held.aclose()

    def _free_slots(self) -> int:
        """Send slots free: notifications whose sends await I/O that may be claimed now."""
        return self.settings.worker_concurrency - len(self._sending)

    def _room(self) -> int:
        """Notifications of any kind that may be claimed now."""
        return self._max_in_flight - len(self._in_flight)

    async def _claim_some(self) -> bool:
        """Claim what the room and the free slots allow; True if the claim was full (more may
        be due)."""
        room = self._room()
        if room <= 0:
            return False
        asked = min(self.settings.worker_batch_size, room)
        awaiting = max(min(asked, self._free_slots()), 0)
        by_slots = self._only_awaiting and 0 < awaiting < asked
        if by_slots:
            # The last claim found nothing sent in place (all email, say): ask for the free
            # slots' worth only. The limited claim would lock ``asked`` rows to lease
            # ``awaiting`` of them; an in-place row among these is claimed all the same (it
            # takes no slot), and a claim that finds one asks for a full batch again.
            asked = awaiting
        self._held_back = False
        try:
            work = await queries.claim_due(
                self.sessions,
                worker_id=self.worker_id,
                batch_size=asked,
                lease_seconds=self.settings.lease_seconds,
                held=self._held,
                awaiting=awaiting,
                in_place=self._in_place,
            )
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            log.warning("database unavailable while claiming (%s); retrying", type(exc).__name__)
            return False
        full = len(work) == asked
        now = utcnow()
        awaits = {
            item.notification.id
            for item in work
            if queries.awaits_io(item.notification, self._in_place, now)
        }
        # Fewer rows than asked, and every slot offered taken: rows awaiting I/O may be left.
        # (Or as many as the free slots were asked for, and all came: more may be left.)
        self._held_back = (not full and awaiting < asked and len(awaits) >= awaiting) or (
            by_slots and full
        )
        self._only_awaiting = bool(work) and len(awaits) == len(work)
        full = full and not by_slots  # then the slots, not the claim, say when to claim again
        if not work:
            return False
        # A row still in flight here can come back in a claim if its lease lapsed while the
        # database was unreachable (renewals failed). The task that holds it carries on and
        # records; a second task on the same row would send its channels again.
        work = [item for item in work if item.notification.id not in self._in_flight]
        self.idle.clear()
        self.observer.claimed([(now - due_since(i.notification)).total_seconds() for i in work])
        if not work:
            return full
        # One task for the batch (``workers/batch.py``), not one per notification.
        task = asyncio.create_task(self.batch.process(work))
        ids = [item.notification.id for item in work]
        for notification_id in ids:
            if notification_id in awaits:
                self._sending[notification_id] = 1  # until the delivery knows its due channels
            self._in_flight[notification_id] = task
        task.add_done_callback(functools.partial(self._forget, ids))
        return full

    def _forget(self, ids: list[uuid.UUID], task: asyncio.Task[None]) -> None:
        """The batch's task is over: whatever of it is still listed (it was cancelled)."""
        for notification_id in ids:
            if self._in_flight.get(notification_id) is task:
                del self._in_flight[notification_id]
                self._sending.pop(notification_id, None)
        self._progress.set()

    # --- SendSlots, for the delivery ----------------------------------------------------------
    def sending(self, notification_id: uuid.UUID, channels: int) -> None:
        if notification_id not in self._sending:
            return  # sent in place: it holds no slot
        if channels:
            self._sending[notification_id] = channels
        else:
            self.sent(notification_id)

    def finished(self, notification_id: uuid.UUID) -> None:
        if self._in_flight.pop(notification_id, None) is not None:
            self._sending.pop(notification_id, None)
            self._progress.set()

    def sent(self, notification_id: uuid.UUID) -> None:
        """One channel of the notification has its outcome: give the slot back after the last."""
        left = self._sending.get(notification_id)
        if left is None:
            return
        if left > 1:
            self._sending[notification_id] = left - 1
        else:
            del self._sending[notification_id]
            self._progress.set()

    @property
    def _refill_at(self) -> int:
        # Claim in chunks (half a batch, or half the slots) rather than one row per freed slot:
        # one claim query per notification would cost more than the notification itself.
        return max(1, min(self.settings.worker_batch_size, self.settings.worker_concurrency) // 2)

    async def _wait(self, stop: asyncio.Event) -> None:
        """Wait until claiming again is worth it: enough room, or enough slots free if the last
        claim left rows behind for want of them (or, then, new work announced: it may be sent
        in place); with room, new work announced, the next row coming due, the poll interval,
        or the stop."""
        if self._in_flight and self._room() < self._refill_at:
            await self._wait_for_progress(stop, lambda: self._room() >= self._refill_at)
            return
        if self._held_back and self._sending and self._free_slots() < self._refill_at:
            await self._wait_for_progress(
                stop, lambda: self._free_slots() >= self._refill_at, or_new_work=True
            )
            return
        if self.wakeup.take():
            return  # new work was announced while we claimed: claim again now
        # Whichever comes first. The next due time is asked for while we already listen: a
        # wake-up arriving meanwhile does not wait for that round trip.
        waiters: list[asyncio.Future[object]] = [
            asyncio.ensure_future(self.wakeup.wait(self.settings.poll_interval_seconds)),
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._sleep_until_next_due()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _sleep_until_next_due(self) -> None:
        """Return when the earliest scheduled row comes due (never, if none or unknown)."""
        # The query runs in a task of its own, shielded: a wake-up cancels only the sleep, as a
        # query cancelled in flight could cost the pooled connection. A later wait reuses it.
        if self._next_due is None or self._next_due.done():
            self._next_due = asyncio.create_task(self._read_next_due(), name="next-due")
        due = await asyncio.shield(self._next_due)
        if due is None:
            await asyncio.Event().wait()  # the other waiters decide
            return
        # Due rows that the claim did not return are held by other workers right now; a short
        # pause keeps this loop from spinning on them.
        await asyncio.sleep(max((due - utcnow()).total_seconds(), 0.05))

    async def _read_next_due(self) -> datetime | None:
        try:
            async with self.sessions() as session:
                return await queries.next_due_at(session)
        except Exception:  # the poll interval wakes us instead
            return None

    async def _wait_for_progress(
        self, stop: asyncio.Event, enough: Callable[[], bool], *, or_new_work: bool = False
    ) -> None:
        """Wait until ``enough()`` (checked as slots come back and notifications finish), the
        stop, nothing in flight, or (``or_new_work``) new work announced or the poll interval."""
        if or_new_work and self.wakeup.take():
            return
        others: list[asyncio.Future[bool]] = [asyncio.ensure_future(stop.wait())]
        if or_new_work:
            poll = self.settings.poll_interval_seconds
            others.append(asyncio.ensure_future(self.wakeup.wait(poll)))
        try:
            while self._in_flight and not any(other.done() for other in others):
                if enough():
                    return
                self._progress.clear()
                progress: asyncio.Future[bool] = asyncio.ensure_future(self._progress.wait())
                try:
                    await asyncio.wait([progress, *others], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    progress.cancel()
        finally:
            for other in others:
                other.cancel()

    async def _drain(self) -> None:
        """Let in-flight work finish for a bounded time; hand back the rest at once."""
        if self._in_flight:
            log.info(
                "stopping: waiting up to %.0fs for %d in flight",
                self.drain_seconds,
                len(self._in_flight),
            )
            await asyncio.wait(list(self._in_flight.values()), timeout=self.drain_seconds)
        unfinished = dict(self._in_flight)
        for task in unfinished.values():
            task.cancel()
        await asyncio.gather(*unfinished.values(), return_exceptions=True)
        # Outcomes already handed to the writer are recorded before the leases go back: a
        # failure recorded after the release would be refused, and the channel sent again.
        # Bounded, for a database that is down: then the leases run out by themselves.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.drain_seconds):
                await self.outcomes.flushed()
                await asyncio.gather(
                    *(self.outcomes.release(i, immediately=True) for i in unfinished),
                    return_exceptions=True,
                )

    async def _renew_leases_forever(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            ids = list(self._in_flight)
            if not ids:
                continue
            try:
                async with self.sessions() as session, session.begin():
                    await queries.renew_leases(
                        session,
                        ids,
                        worker_id=self.worker_id,
                        lease_seconds=self.settings.lease_seconds,
                    )
            except Exception as exc:  # the next renewal tries again; records are lease-guarded
                log.warning("could not renew leases: %s", type(exc).__name__)
