"""A real notifier API on its own thread and event loop, for synchronous clients.

Schemathesis and Hypothesis drive a server with blocking calls (``requests``); a server in the
test's own event loop would never get to answer them. This one runs ``running_service`` in a
private loop on a daemon thread, on a fresh database: a SQLite file or a PostgreSQL database
created for it and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.service import RunningService, make_settings, migrate, running_service

START_TIMEOUT_SECONDS = 60


@contextlib.contextmanager
def threaded_service(backend: str, **overrides: object) -> Iterator[RunningService]:
    """Serve a fresh ``backend`` ("sqlite" or "postgres") database until the block ends."""
    loop = asyncio.new_event_loop()
    started: queue.Queue[RunningService | BaseException] = queue.Queue()
    stop = asyncio.Event()

    async def serve(directory: str) -> None:
        url = sqlite_url(Path(directory)) if backend == "sqlite" else await create_pg_database()
        try:
            await migrate(url)
            async with running_service(make_settings(url, **overrides)) as running:
                started.put(running)
                await stop.wait()
        finally:
            if backend != "sqlite":
                await drop_pg_database(url)

    def main(directory: str) -> None:
        try:
            loop.run_until_complete(serve(directory))
        except BaseException as exc:  # handed to the caller, who raises it in the test
            started.put(exc)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    with tempfile.TemporaryDirectory(prefix="notifier-threaded-") as directory:
        thread = threading.Thread(
            target=main, args=(directory,), name=f"notifier-{backend}", daemon=True
        )
        thread.start()
        first = started.get(timeout=START_TIMEOUT_SECONDS)
        if isinstance(first, BaseException):
            thread.join()
            raise first
        try:
            yield first
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=START_TIMEOUT_SECONDS)
        if not started.empty():
            failure = started.get()
            if isinstance(failure, BaseException):
                raise failure
