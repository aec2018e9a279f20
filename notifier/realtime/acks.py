"""Bounds on what one WebSocket's acks may cost the server (docs/architecture.md,
"WebSocket"; README).

Each ack is recorded off the socket's read loop (``api/routes/ws.py``), so without bounds a
client could queue acks faster than the database takes them: 100k random acks from one socket
grew the process by 128 MiB and held every other socket's inbox up meanwhile. Two bounds:

- a token bucket per socket, ``burst`` deep (a full replay on connect is acked at once) and
  refilled at ``per_second``: a socket that overdraws it is an abuser and is closed (1008);
- at most ``in_flight`` acks of one socket being recorded at once: beyond that the read loop
  waits for one to finish, so the queue a socket can build is that long and no longer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from notifier.settings import Settings

CLOSE_POLICY_VIOLATION = 1008


@dataclass(frozen=True, slots=True)
class AckLimits:
    per_second: float
    burst: int
    in_flight: int
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_settings(cls, settings: Settings) -> AckLimits:
        return cls(
            per_second=settings.ws_ack_per_second,
            burst=settings.ws_ack_burst,
            in_flight=settings.ws_acks_in_flight,
        )


class SocketAcks:
    """One socket's allowance, 64 bytes (and a float from its first ack on): 10k sockets are
    held at once. The bucket is kept as one number, the time at which it would be full again
    (the "generic cell rate algorithm", the same limit as a token bucket); the future to wait
    on exists only while the read loop waits."""

    __slots__ = ("_full_at", "_limits", "_room", "in_flight")

    def __init__(self, limits: AckLimits) -> None:
        self._limits = limits
        self._full_at = 0.0  # long ago: full
        self._room: asyncio.Future[None] | None = None
        self.in_flight = 0

    def take(self) -> bool:
        """Spend one token for an ack; False when the bucket is empty."""
        now = self._limits.clock()
        interval = 1.0 / self._limits.per_second  # what one token takes to come back
        full_at = max(self._full_at, now) + interval
        # Spent so far: (full_at - now) / interval tokens; half a token of slack absorbs the
        # rounding of adding ``interval`` up a thousand times.
        if full_at - now > (self._limits.burst + 0.5) * interval:
            return False
        self._full_at = full_at
        return True

    async def room(self) -> None:
        """Return once fewer than ``in_flight`` acks of this socket are being recorded."""
        while self.in_flight >= self._limits.in_flight:
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight -= 1
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        self._room = None
