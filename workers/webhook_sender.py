"""The webhook sender loop: claim due deliveries, POST each one signed, record each outcome.

    while not stopping:
        claim ahead, in batches, up to AHEAD times what may be sent at once (webhook_slots)
                                                              (storage.webhook_queue.claim_due)
        start what the slots allow: at most WEBHOOK_WORKER_CONCURRENCY requests, at most
        WEBHOOK_CONCURRENCY_PER_ENDPOINT to one endpoint, each in a lane (a task that goes
        on to the next held delivery a slot allows, and ends when there is none); each: POST
        it over its endpoint's keep-alive connection pool (webhook_attempt.attempt), decide
        what it becomes (decide), free its slot, hand the outcome to the group commit
        (webhook_outcomes), which writes it with its batch, without waiting for that
        wait for a NOTIFY wake-up, room for a claim, the next due time, the poll interval, or
        the stop

It runs beside the dispatcher in ``notifier worker`` and ``notifier run``, on the same claim and
lease rules. The per-endpoint bound is what keeps one slow receiver from starving the others:
its requests take at most that many of this worker's slots, its backlog waits (leased) behind
them, and the claim passes over its due rows to the other endpoints'.

A lease lasts two requests' time (``WEBHOOK_TIMEOUT_SECONDS`` each: one it may wait behind, its
own) plus ``LEASE_SECONDS`` to record it, so no renewal is needed: a held delivery not started
in time is let go unsent (``_start_ready``). On stop the loop claims
nothing more, hands back what it had not started, lets in-flight attempts finish for up to
``drain_seconds``, logs the rest as interrupted (due again at once) and writes every outcome
before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
from aiohttp.abc import AbstractResolver
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notifier.metrics.webhooks import WebhookMetrics
from notifier.models.base import utcnow
from notifier.net_guard import guarded_connector
from notifier.realtime.wakeups import PostgresWakeupListener
from notifier.settings import Settings
from notifier.storage import webhook_queue as queue
from notifier.storage.driver import HeldConnections
from notifier.storage.transitions import KEEP_DAYS as HISTORY_DAYS
from notifier.storage.transitions import prune_transitions
from notifier.storage.webhook_log import prune
from notifier.storage.webhook_queue import ClaimedDelivery
from notifier.storage.webhooks import WEBHOOK_WAKEUP_CHANNEL
from workers.next_due import NextDue
from workers.outcomes import is_transient_db_error
from workers.wakeup import Wakeup
from workers.webhook_attempt import attempt, decide, http_client, interrupted
from workers.webhook_outcomes import OutcomeWriter
from workers.webhook_slots import AHEAD, CLAIM_MAX, EndpointSlots

log = logging.getLogger("notifier.webhooks")

PRUNE_EVERY_SECONDS = 3600.0
# A lease covers this many requests' time (one it may wait behind, its own), plus LEASE_SECONDS.
LEASE_REQUESTS = 2


class WebhookSender:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        wakeup: Wakeup,
        worker_id: str | None = None,
        metrics: WebhookMetrics | None = None,
        resolver: AbstractResolver | None = None,
        drain_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.wakeup = wakeup
        self.worker_id = worker_id or f"webhooks-{uuid.uuid4().hex[:12]}"
        self.metrics = metrics or WebhookMetrics()
        self._resolver = resolver  # tests stand in for DNS here (the guard still applies)
        self.lease_seconds = (
            LEASE_REQUESTS * settings.webhook_timeout_seconds + settings.lease_seconds
        )
        # How long a held delivery may wait to start (``_next_to_send``).
        self._start_by = settings.webhook_timeout_seconds + settings.lease_seconds / 2
        self.drain_seconds = (
            drain_seconds if drain_seconds is not None else min(settings.lease_seconds, 25.0)
        )
        # One engine for the claims and outcomes: single statements on autocommit connections,
        # on PostgreSQL two kept checked out (the claim, the outcome batch being written) and
        # run on the asyncpg driver itself (``storage.driver``).
        self.engine: AsyncEngine = sessions.kw["bind"]
        self._held = (
            HeldConnections(self.engine, keep=2)
            if self.engine.dialect.name == "postgresql"
            else None
        )
        # A written outcome may be a retry with its own due time: the loop looks again.
        self.outcomes = OutcomeWriter(
            self.engine,
            worker_id=self.worker_id,
            retry_within=settings.lease_seconds,
            held=self._held,
            metrics=self.metrics,
            on_written=wakeup.notify,
        )
        self.slots = EndpointSlots(
            per_endpoint=settings.webhook_concurrency_per_endpoint,
            total=settings.webhook_worker_concurrency,
        )
        # The lanes: a task per request under way, which goes on to the next delivery ready
        # when its request ends (no task per request), and what each is sending now, since
        # when (loop time). A lane ends when nothing is ready to start.
        self._sending: dict[asyncio.Task[None], tuple[ClaimedDelivery, float]] = {}
        self._claimed_at: dict[uuid.UUID, float] = {}  # loop time of the lease's claim
        self._room = asyncio.Event()  # a request ended and a claim would be worth it
        self._stopping = False
        # One HTTP client per endpoint: its own keep-alive pool, sized to its bound.
        self._http: dict[uuid.UUID, aiohttp.ClientSession] = {}
        self._next_due = NextDue(self._read_next_due)
        self.idle = asyncio.Event()

    # --- the loop ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        pruner = asyncio.create_task(self._prune_until(stop), name="webhook-pruner")
        try:
            while not stop.is_set():
                if self.slots.wants_more and await self._claim_some():
                    continue  # a full claim: more may be due
                self.idle.set() if not self.slots.held else self.idle.clear()
                await self._wait(stop)
        finally:
            # Awaited, not cancelled: a query cancelled in flight can leave its connection in
            # a transaction (on SQLite, holding the write lock) until it is collected.
            with contextlib.suppress(Exception):
                await pruner
            await self._next_due.aclose()
            await self._drain()
            for http in self._http.values():
                await http.close()
            if self._held is not None:
                await self._held.aclose()

    def _client(self, endpoint_id: uuid.UUID) -> aiohttp.ClientSession:
        http = self._http.get(endpoint_id)
        if http is None:
            connector = guarded_connector(
                allow_private=self.settings.webhook_allow_private_endpoints,
                limit=self.slots.per_endpoint,
                resolver=self._resolver,
            )
            http = self._http[endpoint_id] = http_client(
                connector, timeout_seconds=self.settings.webhook_timeout_seconds
            )
        return http

    async def _claim_some(self) -> bool:
        """Claim what there is room for; True if the claim was full."""
        # Outcomes not yet written count against the room past two batches: when recording is
        # what is slow, claiming more would only queue more. (Past one, claims shrank to a few
        # rows whenever a batch gathered for its 50 ms while the one before was written.)
        backlog = max(self.outcomes.backlog - 2 * self.outcomes.max_batch, 0)
        asked = min(self.slots.room - backlog, CLAIM_MAX)
        if asked <= 0:
            return False
        try:
            claimed = await queue.claim_due(
                self.engine,
                worker_id=self.worker_id,
                batch_size=asked,
                lease_seconds=self.lease_seconds,
                per_endpoint=AHEAD * self.slots.per_endpoint,
                busy=self.slots.held_per_endpoint(),
                held=self._held,
            )
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            log.warning("database unavailable while claiming webhooks (%s)", type(exc).__name__)
            return False
        if claimed:
            self.idle.clear()
        now = time.monotonic()
        for delivery in claimed:
            # A row still held here can come back in a claim if its lease lapsed meanwhile:
            # the copy held is the one sent (a second would send it twice), under the new lease.
            if not self.slots.holds(delivery.id):
                self.slots.add(delivery)
            self._claimed_at[delivery.id] = now
        self._start_ready()
        return len(claimed) == asked

    def _start_ready(self) -> None:
        """A lane for each held delivery a slot allows to start now."""
        while (delivery := self._next_to_send()) is not None:
            lane = asyncio.create_task(self._lane(delivery))
            self._sending[lane] = (delivery, time.monotonic())
            lane.add_done_callback(self._lane_ended)

    def _next_to_send(self) -> ClaimedDelivery | None:
        # A held delivery must start early enough to be answered and recorded within its
        # lease; one that waited longer (a slow endpoint, a stall) is let go unsent: its lease
        # runs out and a claim takes it again, rather than two workers sending it at once.
        if self._stopping:
            return None
        start_by = self._start_by
        now = time.monotonic()
        while (delivery := self.slots.next_ready()) is not None:
            claimed_at = self._claimed_at.pop(delivery.id, now)
            if now - claimed_at <= start_by:
                return delivery
            self.slots.done(delivery)
        return None

    async def _lane(self, delivery: ClaimedDelivery) -> None:
        """Send ``delivery``, then whatever is ready next (from what is held: no round trip
        between two requests), until nothing is."""
        lane = asyncio.current_task()
        assert lane is not None
        next_one: ClaimedDelivery | None = delivery
        while next_one is not None:
            await self._deliver(lane, next_one)
            next_one = self._next_to_send()
            if next_one is not None:
                self._sending[lane] = (next_one, time.monotonic())

    async def _deliver(self, lane: asyncio.Task[None], delivery: ClaimedDelivery) -> None:
        http = self._client(delivery.endpoint_id)
        result = await attempt(http, delivery)
        outcome = decide(delivery, result, self.settings.webhook_retry_schedule)
        del self._sending[lane]
        self._sent(delivery)  # its slot is free while the outcome is written
        # The outcome's batch is written by the writer's own task, and the delivery stays
        # leased to this worker until it is (``OutcomeWriter``).
        written = self.outcomes.record_nowait(outcome)
        written.add_done_callback(functools.partial(_report_unrecorded, delivery.id))
        if not self.slots.held:
            # The last of what was claimed: none will join its batch before the next claim.
            self.outcomes.hurry()

    def _sent(self, delivery: ClaimedDelivery) -> None:
        """Its request ended (or was given up): its slot is free."""
        self.slots.done(delivery)
        if self.slots.wants_more:
            self._room.set()

    def _lane_ended(self, lane: asyncio.Task[None]) -> None:
        sending = self._sending.pop(lane, None)
        if sending is not None:  # cancelled mid-request (a stop), or failed
            self._sent(sending[0])
        if not lane.cancelled() and lane.exception() is not None:
            log.error("a webhook sending lane failed", exc_info=lane.exception())

    async def _wait(self, stop: asyncio.Event) -> None:
        """Whichever comes first: new work announced, room for a claim after a request
        ended, the next due time, the poll interval, or the stop."""
        if self.slots.wants_more and self.wakeup.take():
            return
        self._room.clear()
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        if not self.slots.wants_more or self.slots.full_endpoints():
            # Held to the brim, or some endpoint is: a request ending makes room for a claim.
            waiters.append(asyncio.ensure_future(self._room.wait()))
        if not self.slots.held:
            # Only when idle: a read per wait was a tenth of a busy sender's time, and a busy
            # one claims again after each outcome batch anyway.
            waiters.append(asyncio.ensure_future(self._next_due.sleep()))
        if self.slots.wants_more:
            waiters.append(
                asyncio.ensure_future(self.wakeup.wait(self.settings.poll_interval_seconds))
            )
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _read_next_due(self) -> datetime | None:
        async with self.sessions() as session:
            return await queue.next_due_at(session, exclude=self.slots.full_endpoints())

    async def _drain(self) -> None:
        """Hand back what was not started; let in-flight attempts finish for a bounded time;
        log the rest as interrupted (due again at once); write every outcome, which hands
        their leases back."""
        self._stopping = True
        waiting = self.slots.take_waiting()
        self._claimed_at.clear()
        if self._sending:
            log.info(
                "stopping: waiting up to %.0fs for %d webhook attempts",
                self.drain_seconds,
                len(self._sending),
            )
            await asyncio.wait(list(self._sending), timeout=self.drain_seconds)
        unfinished = list(self._sending.items())
        for lane, _ in unfinished:
            lane.cancel()
        await asyncio.gather(*(lane for lane, _ in unfinished), return_exceptions=True)
        now, loop_now = utcnow(), time.monotonic()
        self.outcomes.hurry()  # nothing more is coming
        recording = [
            asyncio.ensure_future(
                self.outcomes.record(
                    interrupted(delivery, now - timedelta(seconds=loop_now - started))
                )
            )
            for _, (delivery, started) in unfinished
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.drain_seconds):
                await asyncio.gather(*recording, return_exceptions=True)
                await self.outcomes.flushed()
                if waiting:
                    async with self.sessions() as session, session.begin():
                        await queue.release(session, self.worker_id, [d.id for d in waiting])

    async def _prune_until(self, stop: asyncio.Event) -> None:
        """Delete log entries and events older than WEBHOOK_LOG_DAYS, and the transitions
        history older than its KEEP_DAYS, at start and hourly."""
        while not stop.is_set():
            try:
                async with self.sessions() as session:
                    older_than = utcnow() - timedelta(days=self.settings.webhook_log_days)
                    deleted = await prune(session, older_than=older_than)
                    history_before = utcnow() - timedelta(days=HISTORY_DAYS)
                    deleted += await prune_transitions(session, older_than=history_before)
                if deleted:
                    log.info("pruned %d webhook log entries and events", deleted)
            except Exception as exc:  # the next round tries again
                log.warning("could not prune the webhook log: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PRUNE_EVERY_SECONDS)


@contextlib.asynccontextmanager
async def webhook_sender_running(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    metrics: WebhookMetrics | None = None,
    wakeup: Wakeup | None = None,
    resolver: AbstractResolver | None = None,
) -> AsyncIterator[WebhookSender]:
    """Run a sender for as long as the block lasts, woken by NOTIFY on PostgreSQL (and by
    ``wakeup``, which an in-process API may poke after its commits)."""
    wakeup = wakeup or Wakeup()
    listener = None
    if not settings.is_sqlite:
        listener = PostgresWakeupListener(
            settings.database_url, wakeup.notify, channel=WEBHOOK_WAKEUP_CHANNEL
        )
        listener.start()
    sender = WebhookSender(
        settings=settings, sessions=sessions, wakeup=wakeup, metrics=metrics, resolver=resolver
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop), name="webhook-sender")
    task.add_done_callback(_report_crash)
    try:
        yield sender
    finally:
        stop.set()
        with contextlib.suppress(Exception):  # reported by _report_crash already
            await task
        if listener is not None:
            await listener.stop()


def _report_unrecorded(delivery_id: uuid.UUID, written: asyncio.Future[None]) -> None:
    if not written.cancelled() and written.exception() is not None:
        log.error(
            "could not record the outcome of webhook delivery %s; it is sent again when "
            "its lease runs out",
            delivery_id,
            exc_info=written.exception(),
        )


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("the webhook sender stopped on an error", exc_info=task.exception())
