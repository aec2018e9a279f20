"""What wakes an idle worker: a NOTIFY from whoever made rows due (PostgreSQL), or an in-process
call (the embedded default). Polling on a timer remains the fallback in the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from notifier.realtime.fanout import asyncpg_dsn
from notifier.storage.notifications import DISPATCH_WAKEUP_CHANNEL

log = logging.getLogger("notifier.worker")


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


class PostgresWakeupListener:
    """LISTEN notifier_dispatch (or ``channel``) on a dedicated connection; every NOTIFY wakes
    the worker. After a lost connection it reconnects, and wakes the worker once in case it
    missed one."""

    def __init__(
        self,
        database_url: str,
        wakeup: Wakeup,
        *,
        retry_seconds: float = 1.0,
        channel: str = DISPATCH_WAKEUP_CHANNEL,
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._wakeup = wakeup
        self._channel = channel
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatch-wakeup-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot LISTEN for work (%s); polling meanwhile", exc)
                await asyncio.sleep(self._retry)
                continue
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                await connection.add_listener(self._channel, lambda *_args: self._wakeup.notify())
                self.listening.set()
                self._wakeup.notify()  # anything enqueued while we were not listening
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=15)
                    if not lost.is_set():
                        await connection.execute("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("lost the LISTEN connection (%s); reconnecting", exc)
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)
            await asyncio.sleep(self._retry)
