"""The listening side of the worker wake-ups (``notifier.storage.wakeups`` sends them): LISTEN on
a dedicated PostgreSQL connection, and call ``wake`` on every NOTIFY. Broker code, like the
fan-out's listener (docs/architecture.md, "Wake-ups")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from notifier.realtime.fanout import asyncpg_dsn
from notifier.storage.notifications import DISPATCH_WAKEUP_CHANNEL

log = logging.getLogger("notifier.worker")


class PostgresWakeupListener:
    """Listen on ``channel`` (the dispatchers' by default) on a dedicated connection; every
    NOTIFY wakes the worker. After a lost connection it reconnects, and wakes the worker once
    in case it missed one."""

    def __init__(
        self,
        database_url: str,
        wake: Callable[[], None],
        *,
        retry_seconds: float = 1.0,
        channel: str = DISPATCH_WAKEUP_CHANNEL,
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._wake = wake
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
                await connection.add_listener(self._channel, lambda *_args: self._wake())
                self.listening.set()
                self._wake()  # anything enqueued while we were not listening
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
