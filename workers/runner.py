"""Build and run a worker from settings and the parts the wiring hands it (``runtime/``): as its
own process (``notifier worker``) or beside the API in one process (``notifier run``).

A worker is the dispatcher (notifications, on the registered channels), woken by LISTEN on
PostgreSQL and by in-process wake-ups, and the webhook sender."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.channels.base import DeliveryChannel
from notifier.channels.registry import CHANNELS
from notifier.channels.spec import ChannelParts
from notifier.metrics.webhooks import WebhookMetrics
from notifier.realtime.fanout import Fanout
from notifier.realtime.wakeups import PostgresWakeupListener
from notifier.settings import Settings
from notifier.storage.push import forget_subscription
from workers.dispatcher import Dispatcher
from workers.outcomes import DispatchObserver
from workers.wakeup import Wakeup
from workers.webhook_sender import webhook_sender_running

log = logging.getLogger("notifier.worker")


def build_channels(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    fanout: Fanout,
    metrics_registry: CollectorRegistry | None = None,
) -> dict[str, DeliveryChannel]:
    """One of every registered channel, by name."""

    async def forget_push_subscription(endpoint: str) -> None:
        await forget_subscription(sessions, endpoint)
        log.info("deleted a push subscription its push service reported gone")

    return CHANNELS.build(
        ChannelParts(settings, fanout, forget_push_subscription, metrics_registry)
    )


async def close_channels(channels: Mapping[str, DeliveryChannel]) -> None:
    for channel in channels.values():
        with contextlib.suppress(Exception):
            await channel.aclose()


@dataclass
class WorkerParts:
    """What a worker shares with whatever else runs in its process."""

    sessions: async_sessionmaker[AsyncSession]
    # Where the websocket channel publishes: to every API process (PostgreSQL), or straight to
    # the sockets of the API in this process.
    fanout: Fanout
    observer: DispatchObserver | None = None
    webhook_metrics: WebhookMetrics | None = None
    # The process's Prometheus registry, for the channels' own series (the email relays').
    metrics_registry: CollectorRegistry | None = None
    # Poked by an API in this process after its commits (storage.wakeups.Wakeups).
    dispatch_wakeup: Wakeup = field(default_factory=Wakeup)
    webhook_wakeup: Wakeup = field(default_factory=Wakeup)


@dataclass
class RunningWorker:
    dispatcher: Dispatcher
    task: asyncio.Task[None]

    async def until(self, stop: asyncio.Event) -> None:
        """Return once ``stop`` is set, or the dispatcher ended (raising what ended it)."""
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({stopped, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if self.task.done():
            self.task.result()


@contextlib.asynccontextmanager
async def worker_running(settings: Settings, parts: WorkerParts) -> AsyncIterator[RunningWorker]:
    """Run a worker for as long as the block lasts; at its end the dispatcher stops claiming,
    lets what is in flight finish (``drain_seconds``) and hands back the rest."""
    listener = None
    if not settings.is_sqlite:
        listener = PostgresWakeupListener(settings.database_url, parts.dispatch_wakeup.notify)
    channels = build_channels(settings, parts.sessions, parts.fanout, parts.metrics_registry)
    dispatcher = Dispatcher(
        settings=settings,
        sessions=parts.sessions,
        channels=channels,
        wakeup=parts.dispatch_wakeup,
        observer=parts.observer,
        on_webhook_events=parts.webhook_wakeup.notify,
    )
    stop = asyncio.Event()
    if listener is not None:
        listener.start()
    log.info("worker %s started", dispatcher.worker_id)
    try:
        async with webhook_sender_running(
            settings, parts.sessions, metrics=parts.webhook_metrics, wakeup=parts.webhook_wakeup
        ):
            task = asyncio.create_task(dispatcher.run(stop), name="dispatcher")
            try:
                yield RunningWorker(dispatcher, task)
            finally:
                stop.set()
                await task
    finally:
        if listener is not None:
            await listener.stop()
        await close_channels(channels)
        log.info("worker %s stopped", dispatcher.worker_id)
