"""What wakes an idle worker: a NOTIFY from whoever made rows due (PostgreSQL, heard by
``notifier.realtime.wakeups.PostgresWakeupListener``), or an in-process call (the embedded
default: ``notifier.storage.wakeups.Wakeups``). Polling on a timer remains the fallback in the
dispatcher."""

from __future__ import annotations

import asyncio


class Wakeup:
    """A level-triggered flag: ``notify`` from anywhere, ``wait`` in the dispatcher."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    def take(self) -> bool:
        """True if woken since the last ``wait`` or ``take`` (news to act on now); clears it."""
        woken = self._event.is_set()
        self._event.clear()
        return woken

    async def wait(self, seconds: float) -> bool:
        """True if woken within ``seconds``, False otherwise. Clears the flag either way."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(seconds, 0))
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()
