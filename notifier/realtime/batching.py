"""Coalesce concurrent requests into one call: what many sockets ask of the database at the same
moment (a wave of connects, a burst of acks after a fan-out) costs one transaction per batch
instead of one per socket, and no more pooled connections than one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """``submit(item)`` returns ``handle(batch)[i]`` for its item. The first item is handled at
    once; the items submitted while a batch is being handled make up the next one (at most
    ``max_batch``). Up to ``concurrency`` batches are handled at a time, so that one slow
    transaction does not hold up the rest. If ``handle`` raises, every caller of that batch
    gets the exception."""

    def __init__(
        self,
        handle: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 200,
        concurrency: int = 1,
    ) -> None:
        self._handle = handle
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._drains: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if any(task.get_loop() is not loop for task in self._drains):
            self._drains, self._pending = set(), []  # left over from a closed event loop
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if len(self._drains) < self._concurrency:
            self._drains.add(loop.create_task(self._run()))
        return await future

    async def _run(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: len(batch)]
                try:
                    results = await self._handle([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its caller may have gone meanwhile
                        future.set_result(result)
                batch = []
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            if len(self._drains) == 1:  # the last one: nobody is left to handle the rest
                for _, future in self._pending:
                    future.cancel()
                self._pending = []
            raise
        finally:
            # No await between the loop's last check and here: a later submit finds a free
            # slot and starts a new task.
            task = asyncio.current_task()
            if task is not None:
                self._drains.discard(task)
