"""``python -m bench.pgq_worker DSN BATCH``: the PgQueuer baseline consumer.

One process, one asyncpg connection, one no-op entrypoint ``noop``; PgQueuer's own dequeue
(``FOR UPDATE SKIP LOCKED``), heartbeats and completion log. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

import asyncpg
from pgqueuer import Job, QueueManager
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from bench.wsclients import run

ENTRYPOINT = "noop"


async def _main(dsn: str, batch_size: int) -> None:
    connection = await asyncpg.connect(dsn)
    manager = QueueManager(Queries(AsyncpgDriver(connection)))

    @manager.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        return None

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, manager.shutdown.set)
    try:
        await manager.run(batch_size=batch_size, dequeue_timeout=timedelta(seconds=5))
    finally:
        await connection.close()


def main() -> int:
    # On uvloop, like the notifier worker it is compared with (bench/noop_worker.py).
    run(_main(sys.argv[1], int(sys.argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
