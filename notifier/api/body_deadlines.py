"""One timer for the deadlines of every request body the enqueue fast path is reading.

``asyncio.timeout`` per request makes and cancels a timer handle each time: ~6 µs with uvloop,
3% of an enqueue's CPU, for a deadline that almost never passes (the body is in by the time
the request is). Here a request only writes its deadline into a dict and takes it out; one
timer, every ``tick`` seconds while any body is being read, cancels the reads past theirs. A
deadline is then met late by up to ``tick`` (at most a second).
"""

from __future__ import annotations

import asyncio
from typing import Any

Task = asyncio.Task[Any]


class BodyDeadlines:
    """``seconds``: how long a read may wait for the body's next piece."""

    def __init__(self, seconds: float, *, tick: float | None = None) -> None:
        self.seconds = seconds
        self.tick = tick if tick is not None else min(1.0, seconds / 4)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading: dict[Task, float] = {}
        self._cancelling: dict[Task, int] = {}
        self._expired: set[Task] = set()
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> Task:
        """The current task reads a body from now on: its first piece is due in ``seconds``."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a body is read in a task"
        if loop is not self._loop:  # a new loop (tests run one each): nothing carries over
            self._loop, self._timer = loop, None
            self._reading.clear()
            self._cancelling.clear()
            self._expired.clear()
        self._reading[task] = loop.time() + self.seconds
        self._cancelling[task] = task.cancelling()
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._sweep)
        return task

    def moved(self, task: Task) -> None:
        """A piece came: the next is due in ``seconds``."""
        if task in self._reading and self._loop is not None:
            self._reading[task] = self._loop.time() + self.seconds

    def passed(self, task: Task) -> bool:
        """Whether the ``CancelledError`` the task is handling is its deadline's, and no one
        else's (then it is not cancelled any more; ``asyncio.timeout``'s rule)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= self._cancelling.get(task, 0)

    def end(self, task: Task) -> None:
        self._reading.pop(task, None)
        self._cancelling.pop(task, None)
        self._expired.discard(task)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for task, deadline in list(self._reading.items()):
            if deadline <= now:
                del self._reading[task]
                self._expired.add(task)
                task.cancel()
        self._timer = loop.call_later(self.tick, self._sweep) if self._reading else None
