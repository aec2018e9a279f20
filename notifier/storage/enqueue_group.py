"""Concurrent enqueues written together (``GroupCommit``): one statement, one commit for many
requests (``storage/enqueue.py`` writes each group)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.coalescer import Coalescer, OnFailure
from notifier.storage.db import is_database_unavailable
from notifier.storage.enqueue import PreparedEnqueue, insert_prepared, write_connection
from notifier.storage.websocket_fast_path import FrameNotify


def merge(parts: Sequence[PreparedEnqueue]) -> PreparedEnqueue:
    merged = PreparedEnqueue()
    for part in parts:
        offset = len(merged.notifications)
        merged.notifications += part.notifications
        merged.deliveries += part.deliveries
        merged.public += part.public
        merged.fast += [offset + index for index in part.fast]
    return merged


class GroupCommit:
    """Concurrent enqueues share one statement and one commit.

    Under load every single enqueue paid for a pool checkout (with its pre-ping), a statement
    and a commit (a WAL flush) of its own, and with 64 concurrent producers most of a
    request's time was spent waiting for a pooled connection. Here (``notifier/coalescer.py``)
    the first request that arrives is written at once, by one of up to ``writers`` writers (so
    that one group is sent while another commits); requests that arrive meanwhile form the next
    group, up to ``max_rows`` notifications, written as one ``insert_prepared``. So at most
    ``writers`` statements are in flight per process, and groups grow with the load.

    Each caller awaits the commit of the group it joined, so its 202 still means committed.
    If a group fails for any reason but the database being unavailable, it is split in halves
    down to the request at fault, so that one request's bad row fails that request alone.
    Requests with an ``Idempotency-Key`` are not grouped: their key conflict is an error of
    their own statement, reported to them alone.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_rows: int = 1000,
        writers: int = 2,
        frame_notify: FrameNotify | None = None,
        on_commit: Callable[[PreparedEnqueue], None] | None = None,
    ) -> None:
        self.engine = engine
        self.frame_notify = frame_notify
        # Called with each committed group that has fast-path rows, before its callers resume
        # (``ServiceContext.deliver_committed``: the hub takes their frames at once). It must
        # not raise: the group is committed.
        self.on_commit = on_commit
        self._coalescer: Coalescer[PreparedEnqueue, None] = Coalescer(
            self._write,
            max_batch=max_rows,
            weight=lambda prepared: len(prepared.notifications),
            concurrency=writers,
            on_failure=_split_unless_unavailable,
        )

    @property
    def groups_written(self) -> int:
        """For tests and curiosity: how much grouping happened."""
        return self._coalescer.batches_handled

    async def insert(self, prepared: PreparedEnqueue) -> None:
        """Insert ``prepared`` with whatever else is waiting; returns once it is committed."""
        await self._coalescer.submit(prepared)

    async def _write(self, group: list[PreparedEnqueue]) -> list[None]:
        merged = merge(group)
        try:
            async with write_connection(self.engine) as connection:
                await insert_prepared(connection, merged, frame_notify=self.frame_notify)
                # PostgreSQL's statement is its own transaction: committed already, before the
                # connection's release (a round trip later). SQLite commits at the release.
                autocommit = connection.dialect.name == "postgresql"
                if autocommit:
                    self._committed(merged)
            if not autocommit:
                self._committed(merged)
        finally:
            # Rows that fell back (an opted-out recipient) stay so in their request, whether
            # this group committed or is about to be split and written again.
            if len(merged.fast) < sum(len(part.fast) for part in group):
                still = {merged.notifications[i]["id"] for i in merged.fast}
                for part in group:
                    part.fast = [i for i in part.fast if part.notifications[i]["id"] in still]
        return [None] * len(group)

    def _committed(self, merged: PreparedEnqueue) -> None:
        if self.on_commit is not None and merged.fast:
            self.on_commit(merged)


def _split_unless_unavailable(exc: Exception) -> OnFailure:
    # An outage fails every request of the group alike: splitting it would only repeat it.
    return OnFailure.FAIL if is_database_unavailable(exc) else OnFailure.SPLIT
