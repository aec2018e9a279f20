"""Who took PostgreSQL's NOTIFY lock during a run, as a LISTENer can tell (issue 15: the
websocket fast path must not take it more than before).

Every transaction that NOTIFYs takes one cluster-wide lock at commit. The census LISTENs on the
dispatchers' wake-up channel and on the frames' channel and counts, by sending backend:

- ``wakeups``: the enqueue's group commits, each of which NOTIFYs ``notifier_dispatch`` once
  (PostgreSQL folds repeats within a transaction): one per enqueue transaction;
- ``frames_riding``: frames sent by a backend that also sent a wake-up (the API's pool: the
  fast path's frames, inside those same enqueue transactions, taking no lock of their own);
- ``frames_apart`` and ``apart_runs``: frames from any other backend (the worker publishing
  them in transactions of their own), and the runs of them that arrived back to back. A
  transaction's notifications are queued together at its commit, so the runs are a lower bound
  on those transactions.

So the NOTIFYing transactions of the run are at least ``wakeups + apart_runs``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg

DISPATCH = "notifier_dispatch"
FRAMES = "notifier_realtime"


class NotifyCensus:
    def __init__(self) -> None:
        self._connection: asyncpg.Connection | None = None
        self._received: list[tuple[int, str]] = []

    async def start(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        await connection.add_listener(DISPATCH, self._heard)
        await connection.add_listener(FRAMES, self._heard)

    def _heard(self, _c: object, pid: int, channel: str, _payload: str) -> None:
        self._received.append((pid, channel))

    async def stop(self) -> dict[str, Any]:
        if self._connection is not None:
            await self._connection.remove_listener(DISPATCH, self._heard)
            await self._connection.remove_listener(FRAMES, self._heard)
        by_channel = Counter(channel for _, channel in self._received)
        enqueuers = {pid for pid, channel in self._received if channel == DISPATCH}
        riding = sum(1 for pid, ch in self._received if ch == FRAMES and pid in enqueuers)
        apart_runs, previous = 0, None
        for pid, channel in self._received:
            apart = channel == FRAMES and pid not in enqueuers
            if apart and previous != pid:
                apart_runs += 1
            previous = pid if apart else None
        return {
            "wakeups": by_channel[DISPATCH],
            "frames_riding": riding,
            "frames_apart": by_channel[FRAMES] - riding,
            "apart_runs": apart_runs,
            "notify_transactions_at_least": by_channel[DISPATCH] + apart_runs,
        }
