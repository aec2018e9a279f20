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
it submits the next (its lease release comes after its channels), or submits them in order as
one group: ``record_many`` takes a claimed batch's outcomes as one caller, one waiter for the
lot (``workers/batch.py``), counted by its outcomes against ``max_batch``.

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
- any other error (one bad item should not sink the rest) splits the batch in halves, down to
  the item at fault, successes first: only that item fails.

The batching itself, the success lane and the failure policy are the generic ``Coalescer``
(``notifier/coalescer.py``); this module says what a batch is and which policy applies.

A caller that is cancelled while it waits does not take its outcome back: the message went out,
so it is still recorded. ``flushed()`` waits until everything submitted is written, which the
dispatcher does before it hands its leases back on stop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.coalescer import Coalescer, OnFailure
from notifier.lifecycle.machine import ChannelChange
from notifier.storage.driver import HeldConnections
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
    items: tuple[Outcome, ...]  # one caller's: one outcome, or a claimed batch's (in order)
    submitted_at: float  # loop time: the items' retry budget runs from here

    @property
    def success(self) -> bool:
        return any(
            isinstance(item, ChannelOutcome) and item.change.event in SUCCESS_EVENTS
            for item in self.items
        )


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
        held: HeldConnections | None = None,
    ) -> None:
        self.sessions = sessions
        self.held = held  # the worker's own connections (``storage/driver.py``), if any
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.max_batch = max_batch
        self.on_events = on_events  # after a commit that wrote webhook events
        self._coalescer: Coalescer[_Pending, list[bool]] = Coalescer(
            self._write,
            max_batch=max_batch,
            weight=lambda pending: len(pending.items),
            concurrency=concurrency,
            on_failure=_on_failure,
            urgent=lambda pending: pending.success,
            urgent_lane=success_lane,
        )

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
        outcome = ChannelOutcome(notification_id, channel, change, release)
        [recorded] = await self._submit((outcome,))
        if not recorded:
            _taken_over(outcome)
        return recorded

    async def record_many(self, outcomes: Sequence[ChannelOutcome]) -> list[bool | Exception]:
        """Record a claimed batch's outcomes, in order, as one caller (one waiter, not one
        each); for each, as ``record`` returns, or the exception that kept it from being
        recorded. A batch that fails for another reason than the database's availability is
        recorded item by item instead (the coalescer splits callers, not their items), so
        only the item at fault fails; a notification's lease release is then withheld after
        an item of it failed, as its lease would be after ``record`` raised."""
        if not outcomes:
            return []
        try:
            results: list[bool | Exception] = list(await self._submit(tuple(outcomes)))
        except Exception as exc:
            if is_transient_db_error(exc) or len(outcomes) == 1:
                return [exc] * len(outcomes)
            results = await self._one_by_one(outcomes)
        for outcome, recorded in zip(outcomes, results, strict=True):
            if recorded is False:
                _taken_over(outcome)
        return results

    async def _one_by_one(self, outcomes: Sequence[ChannelOutcome]) -> list[bool | Exception]:
        failed: set[uuid.UUID] = set()
        results: list[bool | Exception] = []
        for outcome in outcomes:  # in order: a notification's release after its channels
            if outcome.notification_id in failed:
                results.append(RuntimeError("not recorded: an earlier outcome of it failed"))
                continue
            try:
                [recorded] = await self._submit((outcome,))
                results.append(recorded)
            except Exception as exc:
                failed.add(outcome.notification_id)
                results.append(exc)
        return results

    async def release(self, notification_id: uuid.UUID, *, immediately: bool = False) -> bool:
        """Give the lease up; False if it was no longer this worker's."""
        [released] = await self._submit((ReleaseLease(notification_id, immediately),))
        return released

    async def flushed(self) -> None:
        """Wait until everything submitted so far is written (or failed)."""
        await self._coalescer.flushed()

    async def _submit(self, items: tuple[Outcome, ...]) -> list[bool]:
        loop_time = asyncio.get_running_loop().time()
        return await self._coalescer.submit(_Pending(items, loop_time))

    async def _write(self, batch: list[_Pending]) -> list[list[bool]]:
        # Retried through a brief database outage: an unrecorded success would be sent again.
        oldest = min(pending.submitted_at for pending in batch)
        within = self.lease_seconds - (asyncio.get_running_loop().time() - oldest)
        items = [item for pending in batch for item in pending.items]
        results = await with_db_retries(
            lambda: record_outcomes(
                self.sessions,
                items,
                worker_id=self.worker_id,
                on_events=self.on_events,
                held=self.held,
            ),
            within=max(within, 0.0),
        )
        grouped: list[list[bool]] = []
        start = 0
        for pending in batch:
            grouped.append(results[start : start + len(pending.items)])
            start += len(pending.items)
        return grouped


def _taken_over(outcome: ChannelOutcome) -> None:
    log.warning(
        "lease on %s was taken over; outcome of %s not recorded",
        outcome.notification_id,
        outcome.channel,
    )


def _on_failure(exc: Exception) -> OnFailure:
    if is_transient_db_error(exc):
        # ``_write`` retried it for as long as the leases allow: the rows come back to a
        # worker when they run out.
        log.warning("could not record outcomes (%s); their rows come back", type(exc).__name__)
        return OnFailure.FAIL
    log.warning("recording outcomes failed (%s); splitting the batch", type(exc).__name__)
    return OnFailure.SPLIT
