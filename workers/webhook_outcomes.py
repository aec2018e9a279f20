"""Group commit of a webhook sender's outcomes: whatever attempts finished while the last batch
was in the database go in the next one, together — one statement on PostgreSQL
(``storage.webhook_record.record_outcomes``).

The batching is the generic ``Coalescer`` (``notifier/coalescer.py``, docs/architecture.md "The
coalescer"), one batch at a time, each gathering for up to ``max_wait`` (50 ms; in bench scenario
6 the group commit before it wrote about 14 outcomes a transaction, this one about 46 a
statement at 25 ms). Waiting holds up nothing: a sender frees a request's slot and hands its
outcome over without waiting (``record_nowait``: the request's task ends there), so the next
request starts at once, and the delivery stays leased to this worker (no claim can take it
again) until its outcome is committed. A sender left with nothing to send says so (``hurry``):
what is waiting is written at once rather than after the rest of its 50 ms. The batch is
counted in the sender's Prometheus metrics as it is taken, once per batch rather than once per
attempt.

Failures: a transient database error retries the whole batch (``with_db_retries``) for as long
as the oldest outcome's lease keeps its row ours anyway; then every outcome of the batch gets
the error (the sender logs it), and those deliveries, still leased, come due again when their
leases run out: sent again under the same ``webhook-id`` (at least once). Any other error
splits the batch down to the outcome at fault, which alone fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.coalescer import Coalescer, OnFailure
from notifier.metrics.webhooks import WebhookMetrics
from notifier.storage.driver import HeldConnections
from notifier.storage.webhook_record import DeliveryOutcome, record_outcomes
from workers.outcomes import is_transient_db_error, with_db_retries

# How long a batch gathers outcomes before it is written, unless the sender hurries it.
GATHER_SECONDS = 0.05


@dataclass(slots=True)
class _Pending:
    outcome: DeliveryOutcome
    submitted_at: float  # loop time: the retry budget runs from here
    uncounted: bool  # an attempt the metrics have yet to count (once, though split batches rerun)


class OutcomeWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        worker_id: str,
        retry_within: float,
        held: HeldConnections | None = None,
        metrics: WebhookMetrics | None = None,
        on_written: Callable[[], None] = lambda: None,
        max_batch: int = 256,
        max_wait: float | None = None,
    ) -> None:
        self._engine = engine
        self._worker_id = worker_id
        self._held = held
        self._metrics = metrics
        self._retry_within = retry_within
        self.max_batch = max_batch
        self._on_written = on_written
        self._coalescer: Coalescer[_Pending, None] = Coalescer(
            self._write,
            max_batch=max_batch,
            max_wait=GATHER_SECONDS if max_wait is None else max_wait,
            on_failure=_on_failure,
        )

    @property
    def backlog(self) -> int:
        """Outcomes submitted and not yet in a batch being written."""
        return self._coalescer.pending

    @property
    def batches_written(self) -> int:
        return self._coalescer.batches_handled

    async def record(self, outcome: DeliveryOutcome) -> None:
        """Until ``outcome`` is committed; raises if it could not be (see the module). Not
        counted in the metrics' attempts (a stopping sender's interrupted ones)."""
        loop_time = asyncio.get_running_loop().time()
        await self._coalescer.submit(_Pending(outcome, loop_time, uncounted=False))

    def record_nowait(self, outcome: DeliveryOutcome) -> asyncio.Future[None]:
        """An attempt's outcome, counted in the metrics with its batch; the future is done when
        it is committed, or holds why it could not be (see the module)."""
        loop_time = asyncio.get_running_loop().time()
        return self._coalescer.submit_nowait(_Pending(outcome, loop_time, uncounted=True))

    def hurry(self) -> None:
        """Write what is waiting now, not after ``max_wait``: the sender has nothing left in
        flight, so no more outcomes are coming to share the batch."""
        self._coalescer.hurry()

    async def flushed(self) -> None:
        """Until everything submitted so far is written (or given up on)."""
        await self._coalescer.flushed()

    async def _write(self, batch: list[_Pending]) -> list[None]:
        oldest = min(pending.submitted_at for pending in batch)
        within = self._retry_within - (asyncio.get_running_loop().time() - oldest)
        outcomes = [pending.outcome for pending in batch]
        self._count(batch)
        await with_db_retries(
            lambda: record_outcomes(self._engine, self._worker_id, outcomes, held=self._held),
            within=max(within, 0.0),
        )
        # A written outcome may be a retry with its own due time: the sender looks again.
        self._on_written()
        return [None] * len(batch)

    def _count(self, batch: list[_Pending]) -> None:
        """Prometheus sees a batch's attempts at once (counted once each, whatever becomes of
        the write)."""
        uncounted = [pending for pending in batch if pending.uncounted]
        if self._metrics is None or not uncounted:
            return
        for pending in uncounted:
            pending.uncounted = False
        self._metrics.observe_attempts(
            (p.outcome.status.value, p.outcome.duration_ms / 1000) for p in uncounted
        )


def _on_failure(exc: Exception) -> OnFailure:
    # Transient errors were retried in ``_write`` already, for as long as the leases last.
    return OnFailure.FAIL if is_transient_db_error(exc) else OnFailure.SPLIT
