"""Group commit for a worker's outcomes: many notifications' records, one transaction.

    outcome = await writer.record(notification_id, channel, change, release=True)

Each caller waits until its own outcome is committed and gets its own answer (False: the lease
was taken over), exactly as with a transaction of its own; but the writer commits whatever is
pending at once. While a flush is in the database, the outcomes that arrive queue up, and the
next flush takes them all (up to ``max_batch``): no timer, no added latency when the worker is
quiet, and fewer, larger transactions as it gets busy. Up to ``concurrency`` flushes run at a
time (two by default): with one, an outcome that arrived just after a flush began waited for
all of it before its own could start, which was most of a websocket notification's time in the
worker at 500/s (bench scenario 3). Concurrent flushes cannot deadlock: each locks its rows in
id order. One notification's outcomes stay in order, since the dispatcher awaits each before
it submits the next (its lease release comes after its channels).

Successes (``sent``, ``delivered``) go first: until one is committed, a worker that dies
sends that message again once the lease runs out (the duplicate window, measured in
bench/RESULTS.md). A success waits for no more than a flush already in progress, and mostly
for none:
- every flush takes the pending successes before anything else (failures, retries, lease
  releases), so none waits behind a queue of those, nor behind the one-by-one pass below;
- a success never waits for a flush that holds no success (a slow one, say, of failures
  waiting for a row lock): finding none in progress or about to start, it begins one of its
  own, beyond ``concurrency`` if need be (``success_lane``; not on SQLite, whose writers take
  turns, so there it would only wait for the lock). More flushes than that, one per success,
  measured worse: at 300 emails/s they cut the wait for a flush, but lengthened the commit's
  own round trips on a busy machine (bench/RESULTS.md).

Failures:
- a transient database error (connection lost, too many connections, deadlock…) retries the
  whole flush through ``with_db_retries``, for as long as the oldest outcome's lease would keep
  its row ours anyway; then every caller of the batch gets the error, and the rows come back
  to a worker when their leases run out;
- any other error (one bad item should not sink the rest) retries each item of the batch in a
  transaction of its own, once, successes first: only the item at fault fails.

A caller that is cancelled while it waits does not take its outcome back: the message went out,
so it is still recorded. ``flushed()`` waits until everything submitted is written, which the
dispatcher does before it hands its leases back on stop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.lifecycle.machine import ChannelChange
from notifier.storage.outcome_batch import (
    SUCCESS_EVENTS,
    ChannelOutcome,
    Outcome,
    ReleaseLease,
    record_outcomes,
)
from workers.outcomes import is_transient_db_error, with_db_retries

log = logging.getLogger("notifier.worker")


@dataclass(frozen=True, slots=True)
class _Pending:
    item: Outcome
    submitted_at: float  # loop time: the item's retry budget runs from here
    result: asyncio.Future[bool]

    @property
    def success(self) -> bool:
        return isinstance(self.item, ChannelOutcome) and self.item.change.event in SUCCESS_EVENTS


class OutcomeWriter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        worker_id: str,
        lease_seconds: float,
        max_batch: int = 200,
        concurrency: int = 2,
        success_lane: bool = True,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.success_lane = success_lane
        self.on_events = on_events  # after a commit that wrote webhook events
        self._successes: list[_Pending] = []  # taken first by every flush
        self._others: list[_Pending] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Task[None]] = set()  # flushers yet to take a batch
        self._carrying = 0  # flushes in the database whose batch holds a success

    async def record(
        self,
        notification_id: uuid.UUID,
        channel: str,
        change: ChannelChange,
        *,
        release: bool = False,
    ) -> bool:
        """Record one channel's outcome (and, with ``release``, give the lease up); returns once
        it is committed. False if this worker's lease was taken over (a success is recorded
        anyway: see ``outcome_batch``)."""
        recorded = await self._submit(ChannelOutcome(notification_id, channel, change, release))
        if not recorded:
            log.warning(
                "lease on %s was taken over; outcome of %s not recorded", notification_id, channel
            )
        return recorded

    async def release(self, notification_id: uuid.UUID, *, immediately: bool = False) -> bool:
        """Give the lease up; False if it was no longer this worker's."""
        return await self._submit(ReleaseLease(notification_id, immediately))

    async def flushed(self) -> None:
        """Wait until everything submitted so far is written (or failed)."""
        while self._flushers:
            await asyncio.shield(next(iter(self._flushers)))

    async def _submit(self, item: Outcome) -> bool:
        loop = asyncio.get_running_loop()
        pending = _Pending(item, loop.time(), loop.create_future())
        (self._successes if pending.success else self._others).append(pending)
        if len(self._flushers) < self.concurrency or self._needs_lane(pending):
            # Started, not run: the callers that become ready in this same turn of the event
            # loop join its first flush.
            flusher = asyncio.create_task(self._flush_while_pending(), name="outcomes")
            self._flushers.add(flusher)
            self._starting.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
            flusher.add_done_callback(self._starting.discard)
        return await pending.result

    def _needs_lane(self, pending: _Pending) -> bool:
        """Whether a success starts a flush of its own now: no flush that will take it, or
        that carries successes, is under way (see above)."""
        return (
            self.success_lane and pending.success and not self._starting and not self._carrying
        )

    def _next_batch(self) -> list[_Pending]:
        batch = self._successes[: self.max_batch]
        del self._successes[: len(batch)]
        room = self.max_batch - len(batch)
        batch += self._others[:room]
        del self._others[:room]
        return batch

    async def _flush_while_pending(self) -> None:
        this = asyncio.current_task()
        try:
            # Flushers beyond ``concurrency`` (a success's own) leave the rest to the others.
            while self._successes or (self._others and len(self._flushers) <= self.concurrency):
                batch = self._next_batch()
                self._starting.discard(this)
                carrying = 1 if batch[0].success else 0  # successes come first in a batch
                self._carrying += carrying
                try:
                    await self._flush(batch)
                finally:
                    self._carrying -= carrying
        finally:
            self._starting.discard(this)
            # Leave the set now, not in a done callback (which runs a turn of the loop later):
            # an outcome submitted in between would find no room for a flusher, and none left
            # to take it.
            self._flushers.discard(this)

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            results = await self._write(batch)
        except asyncio.CancelledError:
            for pending in batch:
                pending.result.cancel()
            raise
        except Exception as exc:
            if len(batch) > 1 and not is_transient_db_error(exc):
                log.warning(
                    "recording %d outcomes failed (%s); recording them one by one",
                    len(batch),
                    type(exc).__name__,
                )
                for pending in batch:
                    await self._flush([pending])
                return
            log.warning(
                "could not record %d outcome(s) (%s); their rows come back when the leases run out",
                len(batch),
                type(exc).__name__,
            )
            for pending in batch:
                if not pending.result.done():
                    pending.result.set_exception(exc)
            return
        for pending, recorded in zip(batch, results, strict=True):
            if not pending.result.done():  # its caller may have been cancelled meanwhile
                pending.result.set_result(recorded)

    async def _write(self, batch: list[_Pending]) -> list[bool]:
        # Retried through a brief database outage: an unrecorded success would be sent again.
        oldest = min(pending.submitted_at for pending in batch)
        within = self.lease_seconds - (asyncio.get_running_loop().time() - oldest)
        items = [pending.item for pending in batch]
        return await with_db_retries(
            lambda: record_outcomes(
                self.sessions, items, worker_id=self.worker_id, on_events=self.on_events
            ),
            within=max(within, 0.0),
        )
