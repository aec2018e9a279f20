"""Group commit of a webhook sender's outcomes: whatever attempts finished while the last
transaction was in the database go in the next one, together.

``submit`` does not wait: a finished attempt frees its sending slot at once, and the delivery
stays leased to this worker (so no claim can take it again) until its outcome is committed. A
transient database error retries the whole batch for as long as the leases keep the rows ours
anyway; after that the batch is dropped and logged, and the deliveries, still leased, come due
again when their leases run out: sent again under the same ``webhook-id`` (at least once).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.storage.webhook_queue import DeliveryOutcome, record_outcomes
from workers.outcomes import with_db_retries

log = logging.getLogger("notifier.webhooks")


class OutcomeBatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        worker_id: str,
        retry_within: float,
        on_written: Callable[[], None] = lambda: None,
        max_batch: int = 256,
    ) -> None:
        self._sessions = sessions
        self._worker_id = worker_id
        self._retry_within = retry_within
        self.max_batch = max_batch
        self._on_written = on_written
        self._waiting: deque[DeliveryOutcome] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def backlog(self) -> int:
        """Outcomes submitted and not yet written."""
        return len(self._waiting)

    def submit(self, outcome: DeliveryOutcome) -> None:
        self._waiting.append(outcome)
        self._idle.clear()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="webhook-outcomes")

    async def flushed(self) -> None:
        """Until everything submitted so far is written (or given up on)."""
        await self._idle.wait()

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch = [
                    self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))
                ]
                try:
                    write = functools.partial(self._write, batch)
                    await with_db_retries(write, within=self._retry_within)
                    self._on_written()
                except Exception:
                    log.exception(
                        "could not record %d webhook outcomes; their deliveries are sent "
                        "again when their leases run out",
                        len(batch),
                    )
        finally:
            if not self._waiting:
                self._idle.set()

    async def _write(self, batch: list[DeliveryOutcome]) -> None:
        async with self._sessions() as session, session.begin():
            await record_outcomes(session, self._worker_id, batch)
