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
    ``max_batch``). If ``handle`` raises, every caller of that batch gets the exception."""

    def __init__(
        self,
        handle: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 200,
    ) -> None:
        self._handle = handle
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if self._drain is not None and self._drain.get_loop() is not loop:
            self._drain, self._pending = None, []  # left over from a closed event loop
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._drain is None:
            self._drain = loop.create_task(self._run())
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
        finally:
            self._drain = None
            for _, future in (*batch, *self._pending):  # only if this task was cancelled
                future.cancel()
            self._pending = []
