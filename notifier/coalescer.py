"""Coalesce concurrent requests into one call (docs/architecture.md, "The coalescer").

What many callers ask of the database at about the same moment — enqueues, a worker's outcomes,
frames to NOTIFY, a wave of socket replays or acks — costs one statement or one transaction per
batch instead of one each, and no more pooled connections than the batches in flight. Each
batcher of the service is this class with its ``handle`` and a few settings.

``submit(item)`` returns ``handle(batch)[i]`` for its item. The first item is handled at once
(no timer, no added latency when quiet); the items submitted while a batch is in ``handle`` make
up the next one, so batches grow with the load. A batch ends at ``max_batch`` (counted by
``weight``: rows, say, rather than requests), or, with ``max_wait``, when its oldest item has
waited that long. Up to ``concurrency`` batches are handled at a time, so one slow transaction
does not hold up the rest.

A failed batch follows ``on_failure`` (one policy, or a function of the exception):

- ``FAIL``: every caller of the batch gets the exception;
- ``SPLIT``: the batch is handled again as two halves, and so on down to the item at fault,
  which alone gets the exception (one bad row must not sink a batch of good ones);
- ``RETRY``: the batch is handled again after each of ``retry_delays`` (a brief outage), then
  its callers get the exception.

``urgent`` items are taken before all others; with ``urgent_lane`` an urgent item that finds no
batch about to start, and none carrying urgent items, starts one of its own beyond
``concurrency`` (the worker's successes: until recorded, a crash resends them).

``max_pending`` bounds the queue: beyond it ``submit`` waits for room. A caller cancelled while
it waits does not take its item back: it is handled all the same (an outcome that went out is
still recorded). ``submit_nowait(item)`` enqueues without waiting and returns the item's
future (a sender that has more to do than wait for its outcome's batch). ``flushed()`` waits
until everything submitted is handled. ``hurry()`` skips ``max_wait`` until the queue is empty:
a caller that knows no more items are coming soon (a sender with nothing left to send, or
stopping) does not make the last ones wait for company.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class OnFailure(StrEnum):
    SPLIT = "split"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(slots=True)
class _Waiter(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    weight: int
    urgent: bool
    submitted_at: float


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        handle: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 200,
        weight: Callable[[Item], int] | None = None,
        max_wait: float = 0.0,
        concurrency: int = 1,
        on_failure: OnFailure | Callable[[Exception], OnFailure] = OnFailure.FAIL,
        retry_delays: Sequence[float] = (0.05, 0.2, 1.0),
        max_pending: int | None = None,
        urgent: Callable[[Item], bool] | None = None,
        urgent_lane: bool = False,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._handle = handle
        self._max_batch = max_batch
        self._weight = weight
        self._max_wait = max_wait
        self._concurrency = concurrency
        self._policy = on_failure if callable(on_failure) else (lambda _exc: on_failure)
        self._retry_delays = tuple(retry_delays)
        self._max_pending = max_pending
        self._urgent = urgent
        self._urgent_lane = urgent_lane
        self._on_idle = on_idle
        self.batches_handled = 0  # calls of ``handle`` that succeeded: how well batching works
        self._loop: asyncio.AbstractEventLoop | None = None  # the one its state belongs to
        self._reset()

    def _reset(self) -> None:
        self._urgent_queue: deque[_Waiter[Item, Result]] = deque()
        self._queue: deque[_Waiter[Item, Result]] = deque()
        self._queued_weight = 0
        self._drains: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Task[None]] = set()  # drains yet to take a batch
        self._carrying = 0  # batches in ``handle`` that hold an urgent item
        self._filled: asyncio.Event | None = None  # set when the queue reaches max_batch
        self._hurried = False  # ``hurry``: the batch being gathered starts now
        self._room: deque[asyncio.Future[None]] = deque()  # submits waiting for max_pending

    @property
    def pending(self) -> int:
        """Items waiting for a batch (not those in ``handle``)."""
        return len(self._urgent_queue) + len(self._queue)

    async def submit(self, item: Item) -> Result:
        loop = self._running_loop()
        await self._wait_for_room()
        return await self._enqueue(item, loop)

    def submit_nowait(self, item: Item) -> asyncio.Future[Result]:
        """``submit`` for a caller that does not wait for the batch: the future of its result
        (or exception), to await or to give a callback; the item is handled either way. Not
        with ``max_pending`` (its room is waited for: ``submit``)."""
        if self._max_pending is not None:
            raise RuntimeError("submit_nowait cannot wait for room under max_pending")
        return self._enqueue(item, self._running_loop())

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                self._reset()  # left over from an event loop that has since closed (tests)
            self._loop = loop
        return loop

    def _enqueue(self, item: Item, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Result]:
        urgent = self._urgent is not None and self._urgent(item)
        waiter: _Waiter[Item, Result] = _Waiter(
            item,
            loop.create_future(),
            self._weight(item) if self._weight is not None else 1,
            urgent,
            loop.time(),
        )
        (self._urgent_queue if urgent else self._queue).append(waiter)
        self._queued_weight += waiter.weight
        if self._filled is not None and self._queued_weight >= self._max_batch:
            self._filled.set()
        if len(self._drains) < self._concurrency or self._needs_lane(urgent):
            # Started, not run: callers that become ready in this same turn of the loop join
            # its first batch.
            drain = loop.create_task(self._drain())
            self._drains.add(drain)
            self._starting.add(drain)
        return waiter.future

    def hurry(self) -> None:
        """Start the next batch without its ``max_wait`` (now, if it is gathering), and each
        one after it until a batch leaves the queue empty; then batches gather as usual."""
        self._hurried = True
        if self._filled is not None:
            self._filled.set()

    async def flushed(self) -> None:
        """Wait until everything submitted so far is handled (or failed)."""
        while self._drains:
            await asyncio.shield(next(iter(self._drains)))

    def _needs_lane(self, urgent: bool) -> bool:
        return self._urgent_lane and urgent and not self._starting and not self._carrying

    async def _wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        while self._max_pending is not None and self.pending >= self._max_pending:
            room: asyncio.Future[None] = loop.create_future()
            self._room.append(room)
            await room

    def _make_room(self) -> None:
        # Every waiter looks again; those that still find no room wait again.
        while self._room:
            room = self._room.popleft()
            if not room.done():
                room.set_result(None)

    async def _drain(self) -> None:
        this = asyncio.current_task()
        batch: list[_Waiter[Item, Result]] = []
        try:
            # Drains beyond ``concurrency`` (an urgent item's own) leave the rest to the others.
            while self._urgent_queue or (self._queue and len(self._drains) <= self._concurrency):
                await self._fill()
                batch = self._take()
                self._starting.discard(this)
                if not batch:
                    continue
                carrying = 1 if batch[0].urgent else 0  # urgent items come first in a batch
                self._carrying += carrying
                try:
                    await self._run(batch)
                finally:
                    self._carrying -= carrying
                batch = []
        except asyncio.CancelledError:
            for waiter in batch:
                waiter.future.cancel()
            if len(self._drains) == 1:  # the last one: nobody is left to handle the rest
                for waiter in (*self._urgent_queue, *self._queue):
                    waiter.future.cancel()
                self._urgent_queue.clear()
                self._queue.clear()
                self._queued_weight = 0
            raise
        finally:
            # No await between the loop's last check and here: a later submit finds a free
            # slot and starts a new drain.
            self._starting.discard(this)
            if this is not None:
                self._drains.discard(this)
            if not self._drains and self._on_idle is not None:
                await self._on_idle()

    async def _fill(self) -> None:
        """With ``max_wait``: wait until the batch is full or its oldest item waited that long."""
        if self._max_wait <= 0:
            return
        loop = asyncio.get_running_loop()
        oldest = min(q[0].submitted_at for q in (self._urgent_queue, self._queue) if q)
        while self._queued_weight < self._max_batch and not self._hurried:
            left = oldest + self._max_wait - loop.time()
            if left <= 0:
                return
            self._filled = self._filled or asyncio.Event()
            self._filled.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._filled.wait()

    def _take(self) -> list[_Waiter[Item, Result]]:
        batch: list[_Waiter[Item, Result]] = []
        weight = 0
        for queue in (self._urgent_queue, self._queue):
            while queue and (not batch or weight + queue[0].weight <= self._max_batch):
                waiter = queue.popleft()
                batch.append(waiter)
                weight += waiter.weight
        self._queued_weight -= weight
        if batch:
            self._make_room()
        self._hurried = self._hurried and bool(self._urgent_queue or self._queue)
        return batch

    async def _run(self, batch: list[_Waiter[Item, Result]]) -> None:
        retries = 0
        while True:
            try:
                results = await self._handle([waiter.item for waiter in batch])
            except Exception as exc:
                policy = self._policy(exc)
                if policy is OnFailure.RETRY and retries < len(self._retry_delays):
                    await asyncio.sleep(self._retry_delays[retries])
                    retries += 1
                    continue
                if policy is OnFailure.SPLIT and len(batch) > 1:
                    half = len(batch) // 2
                    await self._run(batch[:half])
                    await self._run(batch[half:])
                    return
                for waiter in batch:
                    if not waiter.future.done():  # its caller may have gone meanwhile
                        waiter.future.set_exception(exc)
                return
            self.batches_handled += 1
            for waiter, result in zip(batch, results, strict=True):
                if not waiter.future.done():
                    waiter.future.set_result(result)
            return
