"""Concurrent enqueues written together (``GroupCommit``): one statement, one commit for many
requests (``storage/enqueue.py`` writes each group)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notifier.coalescer import Coalescer, OnFailure
from notifier.models.notification import Notification
from notifier.storage.db import is_database_unavailable
from notifier.storage.driver import HeldConnections
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

    On PostgreSQL each writer keeps its connection checked out (``driver.HeldConnections``),
    so a group pays no pool check-out, pre-ping or reset: the statement is its one round trip.
    Without the pre-ping, a held connection the server dropped (a restart) fails its next
    group; that group is written once more on a fresh connection (``_write_again``). Close
    with ``aclose``.
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
        self._held = (
            HeldConnections(engine, keep=writers) if engine.dialect.name == "postgresql" else None
        )
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

    async def aclose(self) -> None:
        """Give the held connections back to the pool (later groups check out their own)."""
        if self._held is not None:
            await self._held.aclose()

    async def _write(self, group: list[PreparedEnqueue]) -> list[None]:
        merged = merge(group)
        try:
            if self._held is None:
                await self._write_sqlite(merged)
            else:
                await self._write_postgres(self._held, merged)
        finally:
            # Rows that fell back (an opted-out recipient) stay so in their request, whether
            # this group committed or is about to be split and written again.
            if len(merged.fast) < sum(len(part.fast) for part in group):
                still = {merged.notifications[i]["id"] for i in merged.fast}
                for part in group:
                    part.fast = [i for i in part.fast if part.notifications[i]["id"] in still]
        return [None] * len(group)

    async def _write_sqlite(self, merged: PreparedEnqueue) -> None:
        async with write_connection(self.engine) as connection:
            await insert_prepared(connection, merged)
        self._committed(merged)  # at the transaction's end, with the block

    async def _write_postgres(self, held: HeldConnections, merged: PreparedEnqueue) -> None:
        # The statement is its own transaction (autocommit): committed once it returns.
        try:
            async with held.driver() as (connection, driver):
                await insert_prepared(
                    connection, merged, frame_notify=self.frame_notify, driver=driver
                )
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            # The held connection is dropped (``driver.after_failure``); the next group gets
            # a fresh one.
            await self._write_again(merged)
        self._committed(merged)

    async def _write_again(self, merged: PreparedEnqueue) -> None:
        """The group once more, on a fresh (pre-pinged) connection, after its held connection
        was lost: what a database restart costs the first group per held connection, which
        must not answer 503 where a pooled connection's pre-ping would have found the loss.

        Whether the lost statement committed cannot be known from the error: the connection
        may have dropped after the server's commit and before its answer, or a server still
        running the statement may yet commit it. Writing again is safe all the same, because
        the group's rows carry their ids from ``prepare`` (client-made UUIDs, the
        notifications' primary key) and the statement is all or nothing: if the first attempt
        committed, or commits meanwhile (the second waits on its uncommitted keys), the second
        fails on those keys, and finding all the group's ids stored says the group is
        written, once, its frames NOTIFYed with that commit. If it did not commit, the second
        writes the group. (Groups hold no ``Idempotency-Key`` record, whose conflict would mean
        something else.) A group that fails again, on the fresh connection, fails its
        requests as before (503 while the database is down; split on a bad row)."""
        async with write_connection(self.engine) as connection:
            try:
                await insert_prepared(connection, merged, frame_notify=self.frame_notify)
            except IntegrityError:
                ids = [row["id"] for row in merged.notifications]
                if await _stored(connection, ids) < len(ids):
                    raise  # a row at fault: the group is split as any other failure says

    def _committed(self, merged: PreparedEnqueue) -> None:
        if self.on_commit is not None and merged.fast:
            self.on_commit(merged)


async def _stored(connection: AsyncConnection, ids: list[object]) -> int:
    found = await connection.execute(
        select(func.count()).select_from(Notification).where(Notification.id.in_(ids))
    )
    return int(found.scalar_one())


def _split_unless_unavailable(exc: Exception) -> OnFailure:
    # An outage fails every request of the group alike: splitting it would only repeat it.
    return OnFailure.FAIL if is_database_unavailable(exc) else OnFailure.SPLIT
