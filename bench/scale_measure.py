"""What ``bench.scale`` measures: notifications through, in how long, and the CPU seconds of
each process in the window (``/proc/<pid>/stat``), PostgreSQL's backends and the NATS server
included."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.processes import cpu_seconds


@dataclass
class Measured:
    """One measurement: what went through, in how long, and each process's CPU seconds."""

    label: str
    notifications: int
    seconds: float
    cpu: dict[str, float]
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.notifications / self.seconds if self.seconds else 0.0

    def cpu_ms_each(self) -> dict[str, float]:
        n = max(self.notifications, 1)
        return {name: 1000.0 * s / n for name, s in self.cpu.items()}

    def as_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "notifications": self.notifications,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.rate, 1),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "cpu_seconds": {k: round(v, 3) for k, v in self.cpu.items()},
            "cpu_ms_per_notification": {k: round(v, 3) for k, v in self.cpu_ms_each().items()},
            **self.extra,
        }


class CpuMeter:
    """CPU seconds of named processes between ``start`` and ``stop``, and of the PostgreSQL
    backends serving the database (``pg_stat_activity``; the server runs on this machine): the
    pools keep their connections through a measurement, and a backend that appears meanwhile
    counts whole. One that exits before ``stop`` is missed (none should: nothing reconnects)."""

    def __init__(self, pids: dict[str, int], connection: asyncpg.Connection) -> None:
        self.pids = pids
        self.connection = connection
        self._before: dict[str, float] = {}
        self._backends: dict[int, float] = {}

    async def _backend_cpu(self) -> dict[int, float]:
        rows = await self.connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        found = {}
        for row in rows:
            with contextlib.suppress(OSError):
                found[int(row["pid"])] = cpu_seconds(int(row["pid"]))
        return found

    async def start(self) -> None:
        self._backends = await self._backend_cpu()
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    async def stop(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        after = await self._backend_cpu()
        used["postgres"] = sum(cpu - self._backends.get(pid, 0.0) for pid, cpu in after.items())
        return used


def nats_server_pid(url: str) -> int | None:
    """The local nats-server process serving ``url``'s port, to count its CPU too."""
    port = url.rsplit(":", 1)[-1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"nats-server") and port.encode() in argv:
                return int(entry.name)
    return None
