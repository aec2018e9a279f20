"""Batched NOTIFY for frames published outside any transaction (the worker's websocket channel).

One frame at a time cost a pool checkout with its ping, BEGIN, the ``pg_notify`` and COMMIT:
most of a worker's time when it delivered websocket notifications (bench/RESULTS.md, scenario
1). Here the frames that are published while a NOTIFY is in flight wait for it and then go out
together, in one autocommit statement: a lone frame still leaves at once, and a burst costs one
round trip per batch. ``publish`` returns once its frame's NOTIFY was sent, as before.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notifier.storage.db import is_database_unavailable

log = logging.getLogger("notifier.realtime")

# In the order given: PostgreSQL delivers the notifications of one transaction in the order
# they were sent, so one user's frames keep their order.
_NOTIFY_MANY = text(
    "SELECT pg_notify(:channel, payload) FROM unnest(:payloads) WITH ORDINALITY AS t(payload, n) "
    "ORDER BY n"
).bindparams(bindparam("payloads", type_=ARRAY(Text)))

# 500 frames of at most 8000 bytes: a statement of a few MB at worst.
MAX_BATCH = 500


class NotifyBatcher:
    """Sends the payloads given to ``publish`` on ``channel``, batching concurrent ones.

    One drain task at a time holds one pooled connection (autocommit) for as long as payloads
    keep coming and gives it back when none are left, so an idle process holds none and the
    engine's owner closes everything as before. While the database is unreachable a batch is
    tried again after each of ``retry_delays``; then its callers get the error.
    """

    def __init__(
        self, engine: AsyncEngine, channel: str, *, retry_delays: tuple[float, ...]
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._retry_delays = retry_delays
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._drain: asyncio.Task[None] | None = None
        self.batches_sent = 0  # statements that went out: how well bursts were batched

    async def publish(self, payload: str) -> None:
        loop = asyncio.get_running_loop()
        if self._drain is not None and self._drain.get_loop() is not loop:
            # Left over from an event loop that has since closed (tests run one per test).
            self._drain, self._pending = None, []
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((payload, future))
        if self._drain is None:
            self._drain = loop.create_task(self._run(), name="realtime-notify")
        await future

    async def _run(self) -> None:
        try:
            while self._pending:
                await self._send_all()
        finally:
            self._drain = None
            for _, future in self._pending:  # only when this task itself was cancelled
                future.cancel()
            self._pending = []

    async def _send_all(self) -> None:
        """Send batches until none are left, on one connection; on a lost connection, wait and
        go round again with a new one."""
        for delay in (*self._retry_delays, None):
            try:
                async with self._engine.connect() as connection:
                    autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    while self._pending:
                        await self._send_batch(autocommit)
                return
            except Exception as exc:
                if delay is None or not is_database_unavailable(exc):
                    self._fail_batch(exc)
                    return
                log.warning("could not publish frames (%s); trying again", type(exc).__name__)
            await asyncio.sleep(delay)

    async def _send_batch(self, connection: AsyncConnection) -> None:
        batch = self._pending[:MAX_BATCH]
        await connection.execute(
            _NOTIFY_MANY, {"channel": self._channel, "payloads": [p for p, _ in batch]}
        )
        self.batches_sent += 1
        del self._pending[: len(batch)]
        for _, future in batch:
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(None)

    def _fail_batch(self, exc: Exception) -> None:
        batch = self._pending[:MAX_BATCH]
        del self._pending[: len(batch)]
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
