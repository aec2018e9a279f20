"""Batch writer of ``ProgressMetric`` rows: callers append in memory (cheap, never awaits the
database); a background task inserts what accumulated every ``interval`` seconds. A failed
flush drops that batch (metrics must never hold back deliveries) and says so in the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.models.metric import ProgressMetric
from notifier.storage.metrics import insert_metrics

log = logging.getLogger("notifier.metrics")

MAX_BUFFER = 50_000


class MetricRecorder:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, interval: float = 5.0
    ) -> None:
        self._sessions = sessions
        self._interval = interval
        self._buffer: list[ProgressMetric] = []
        # Samples where only the newest per key matters (a task's progress): a task reporting
        # 1000 times a second still writes one row per flush.
        self._latest: dict[str, ProgressMetric] = {}
        self._before_flush: list[Callable[[], list[ProgressMetric]]] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def add(self, metric: ProgressMetric) -> None:
        if len(self._buffer) >= MAX_BUFFER:
            self.dropped += 1
            return
        self._buffer.append(metric)

    def keep_latest(self, key: str, metric: ProgressMetric) -> None:
        self._latest[key] = metric

    def before_flush(self, producer: Callable[[], list[ProgressMetric]]) -> None:
        """Register a producer of rollup rows (throughput, error rate) called at each flush."""
        self._before_flush.append(producer)

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="metric-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> int:
        for producer in self._before_flush:
            self._buffer.extend(producer())
        batch, self._buffer = self._buffer, []
        batch.extend(self._latest.values())
        self._latest = {}
        if not batch:
            return 0
        try:
            await insert_metrics(self._sessions, batch)
        except Exception as exc:
            log.warning("dropped %d metric rows: %s", len(batch), type(exc).__name__)
            return 0
        return len(batch)
