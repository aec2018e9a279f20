"""An idle loop's sleep until the next due time it reads from the database.

    next_due = NextDue(read)            # read: () -> the earliest due time, or None
    await next_due.sleep()              # one of the waiters an idle loop races
    await next_due.aclose()             # on stop

The read runs in a task of its own, shielded: a wake-up cancels only the sleep, never a query in
flight, which could cost the pooled connection (and, on SQLite, leave its write lock held until
the connection is collected). A later sleep reuses a read still running; on stop the read is
awaited, not cancelled. The dispatcher's loop has the same sleep (``Dispatcher._wait``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

from notifier.models.base import utcnow

# Due rows a claim did not return are another worker's right now: a short pause keeps the loop
# from spinning on them.
MIN_PAUSE_SECONDS = 0.05


class NextDue:
    def __init__(self, read: Callable[[], Awaitable[datetime | None]]) -> None:
        self._read = read
        self._task: asyncio.Task[datetime | None] | None = None

    async def _read_or_none(self) -> datetime | None:
        try:
            return await self._read()
        except Exception:  # the poll interval wakes the loop instead
            return None

    async def sleep(self) -> None:
        """Return when the earliest due row comes due; never, if there is none (or the read
        failed): the loop's other waiters decide then."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read_or_none(), name="next-due")
        due = await asyncio.shield(self._task)
        if due is None:
            await asyncio.Event().wait()
            return
        await asyncio.sleep(max((due - utcnow()).total_seconds(), MIN_PAUSE_SECONDS))

    async def aclose(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
