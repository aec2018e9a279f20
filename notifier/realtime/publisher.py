"""Batched NOTIFY for frames published outside any transaction (the worker's websocket channel).

One frame at a time cost a pool checkout with its ping, BEGIN, the ``pg_notify`` and COMMIT:
most of a worker's time when it delivered websocket notifications (bench/RESULTS.md, scenario
1). Here the frames that are published while a NOTIFY is in flight wait for it and then go out
together, in one autocommit statement: a lone frame still leaves at once, and a burst costs one
round trip per batch. ``publish`` returns once its frame's NOTIFY was sent, as before.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notifier.coalescer import Coalescer, OnFailure
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
    """Sends the payloads given to ``publish`` on ``channel``, batching concurrent ones
    (``notifier/coalescer.py``: one batch at a time, so one user's frames keep their order).

    The drain holds one pooled connection (autocommit) for as long as payloads keep coming and
    gives it back when none are left, so an idle process holds none and the engine's owner
    closes everything as before. While the database is unreachable a batch is tried again after
    each of ``retry_delays`` (on a new connection); then its callers get the error.
    """

    def __init__(
        self, engine: AsyncEngine, channel: str, *, retry_delays: tuple[float, ...]
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._connection: AsyncConnection | None = None
        self._coalescer: Coalescer[str, None] = Coalescer(
            self._send,
            max_batch=MAX_BATCH,
            on_failure=_retry_if_unavailable,
            retry_delays=retry_delays,
            on_idle=self._give_back,
        )

    @property
    def batches_sent(self) -> int:
        """Statements that went out: how well bursts were batched."""
        return self._coalescer.batches_handled

    async def publish(self, payload: str) -> None:
        await self._coalescer.submit(payload)

    async def _send(self, payloads: list[str]) -> list[None]:
        if self._connection is None:
            connection = await self._engine.connect()
            self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        try:
            await self._connection.execute(
                _NOTIFY_MANY, {"channel": self._channel, "payloads": payloads}
            )
        except Exception:
            await self._give_back()  # a lost connection: the retry takes a new one
            raise
        return [None] * len(payloads)

    async def _give_back(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a dead connection is dropped by the pool
                await connection.close()


def _retry_if_unavailable(exc: Exception) -> OnFailure:
    if is_database_unavailable(exc):
        log.warning("could not publish frames (%s); trying again", type(exc).__name__)
        return OnFailure.RETRY
    return OnFailure.FAIL
