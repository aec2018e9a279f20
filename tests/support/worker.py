"""A real dispatcher running inside the test's event loop, with the real channels."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from notifier.realtime.fanout import Fanout, PostgresFanout
from notifier.realtime.wakeups import PostgresWakeupListener
from notifier.settings import Settings
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.wakeups import DISPATCH
from runtime.roles import nats_fanout
from tests.support.service import RunningService
from workers.dispatcher import Dispatcher
from workers.outcomes import DispatchObserver
from workers.runner import build_channels, close_channels
from workers.wakeup import Wakeup


@contextlib.asynccontextmanager
async def running_dispatcher(
    settings: Settings,
    *,
    fanout: Fanout | None = None,
    wakeup: Wakeup | None = None,
    observer: DispatchObserver | None = None,
    on_webhook_events: Callable[[], None] | None = None,
) -> AsyncIterator[Dispatcher]:
    """Run one dispatcher until the block ends. On SQLite pass the service's ``LocalFanout``
    and a ``Wakeup`` subscribed to its ``wakeups``; on PostgreSQL it LISTENs like a worker
    process does. ``on_webhook_events``: after a commit of outcomes that wrote webhook events
    (`notifier run` wakes its webhook sender there)."""
    # Sized like `notifier worker` sizes its pool (workers/runner.py), so a test with several
    # dispatchers needs no more PostgreSQL connections than as many worker processes would.
    engine = create_engine(
        settings.database_url, pool_size=max(4, settings.worker_concurrency // 4)
    )
    sessions = create_session_factory(engine)
    wakeup = wakeup or Wakeup()
    listener = None
    if not settings.is_sqlite:
        listener = PostgresWakeupListener(settings.database_url, wakeup.notify)
        listener.start()
        await asyncio.wait_for(listener.listening.wait(), 10)
    # Like a worker process: its own broker connection (NATS when the settings name one).
    own_fanout = None if fanout else nats_fanout(settings, "test-worker")
    channels = build_channels(settings, sessions, fanout or own_fanout or PostgresFanout(engine))
    dispatcher = Dispatcher(
        settings=settings,
        sessions=sessions,
        channels=channels,
        wakeup=wakeup,
        observer=observer,
        on_webhook_events=on_webhook_events,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        await task
        if listener is not None:
            await listener.stop()
        await close_channels(channels)
        if own_fanout is not None:
            await own_fanout.aclose()
        await engine.dispose()


@contextlib.asynccontextmanager
async def dispatcher_beside(
    service: RunningService, *, observer: DispatchObserver | None = None
) -> AsyncIterator[Dispatcher]:
    """A dispatcher delivering a running service's notifications, wired like `notifier run`:
    woken by the service's enqueues, and on SQLite publishing straight to its sockets."""
    wakeup = Wakeup()
    service.context.wakeups.subscribe(DISPATCH, wakeup.notify)
    fanout = service.context.fanout if service.settings.is_sqlite else None
    try:
        if service.context.listener is not None:
            await asyncio.wait_for(service.context.listener.listening.wait(), 10)
        async with running_dispatcher(
            service.settings, fanout=fanout, wakeup=wakeup, observer=observer
        ) as running:
            yield running
    finally:
        service.context.wakeups.unsubscribe(DISPATCH, wakeup.notify)
