"""Assemble and run a worker: as its own process on PostgreSQL (`notifier worker`), or inside
the API's process on the embedded default (`notifier run`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Mapping

import uvicorn
from prometheus_client import start_http_server
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifier.api.context import ServiceContext
from notifier.api.routes.webhooks import TWILIO_STATUS_PATH
from notifier.channels.base import DeliveryChannel
from notifier.channels.browser import BrowserChannel
from notifier.channels.email import EmailChannel
from notifier.channels.sms import SmsChannel
from notifier.channels.websocket import WebSocketChannel
from notifier.metrics.instruments import ServiceMetrics
from notifier.metrics.recorder import MetricRecorder
from notifier.metrics.webhooks import WebhookMetrics
from notifier.models.recipient import PushSubscription
from notifier.realtime.fanout import Fanout, PostgresFanout
from notifier.settings import Settings
from notifier.storage.db import create_engine, create_session_factory
from workers.dispatcher import Dispatcher
from workers.observer import MetricsObserver
from workers.wakeup import PostgresWakeupListener, Wakeup
from workers.webhook_sender import webhook_sender_running

log = logging.getLogger("notifier.worker")


def build_channels(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], fanout: Fanout
) -> dict[str, DeliveryChannel]:
    async def forget_subscription(endpoint: str) -> None:
        async with sessions() as session, session.begin():
            await session.execute(
                delete(PushSubscription).where(PushSubscription.endpoint == endpoint)
            )
        log.info("deleted a push subscription its push service reported gone")

    callback = (
        f"{settings.public_base_url.rstrip('/')}{TWILIO_STATUS_PATH}"
        if settings.public_base_url
        else None
    )
    channels: list[DeliveryChannel] = [
        WebSocketChannel(fanout),
        EmailChannel(settings),
        BrowserChannel(settings, on_subscription_gone=forget_subscription),
        SmsChannel(settings, status_callback_url=callback),
    ]
    return {channel.name.value: channel for channel in channels}


async def close_channels(channels: Mapping[str, DeliveryChannel]) -> None:
    for channel in channels.values():
        with contextlib.suppress(Exception):
            await channel.aclose()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_worker_process(settings: Settings) -> None:
    """`notifier worker`: claim and send until SIGTERM/SIGINT, then drain and return."""
    # No pre-ping: it was a round trip per checkout, two per dispatch cycle (claim, outcome
    # flush), and every worker transaction is retried on a lost connection anyway.
    engine = create_engine(
        settings.database_url,
        pool_size=max(4, settings.worker_concurrency // 4),
        pre_ping=False,
    )
    sessions = create_session_factory(engine)
    metrics = ServiceMetrics()
    recorder = MetricRecorder(sessions)
    observer = MetricsObserver(metrics, recorder)
    if settings.worker_metrics_port is not None:
        start_http_server(settings.worker_metrics_port, registry=metrics.registry)
    wakeup = Wakeup()
    listener = None if settings.is_sqlite else PostgresWakeupListener(settings.database_url, wakeup)
    channels = build_channels(settings, sessions, PostgresFanout(engine))
    dispatcher = Dispatcher(
        settings=settings, sessions=sessions, channels=channels, wakeup=wakeup, observer=observer
    )
    stop = asyncio.Event()
    _stop_on_signals(stop)
    if listener is not None:
        listener.start()
    recorder.start()
    # Everything allocated so far (modules, mappers, compiled SQL, the channels) lives as long
    # as the process: move it out of the collector's sight, or every full collection walks it
    # again; with a busy dispatcher that was a sixth of the worker's CPU.
    gc.freeze()
    log.info("worker %s started", dispatcher.worker_id)
    try:
        async with webhook_sender_running(
            settings, sessions, metrics=WebhookMetrics(metrics.registry)
        ):
            await dispatcher.run(stop)
    finally:
        await recorder.stop()
        if listener is not None:
            await listener.stop()
        await close_channels(channels)
        await engine.dispose()
        log.info("worker %s stopped", dispatcher.worker_id)


async def run_in_process_worker(
    settings: Settings, context: ServiceContext, server: uvicorn.Server
) -> None:
    """`notifier run`: the API server and one worker in this process, sharing the engine; the
    API wakes the worker directly and the worker publishes straight to the API's sockets."""
    wakeup = Wakeup()
    context.after_enqueue.append(wakeup.notify)
    listener = None if settings.is_sqlite else PostgresWakeupListener(settings.database_url, wakeup)
    channels = build_channels(settings, context.sessions, context.fanout)
    dispatcher = Dispatcher(
        settings=settings,
        sessions=context.sessions,
        channels=channels,
        wakeup=wakeup,
        observer=MetricsObserver(context.metrics, context.recorder),
    )
    stop = asyncio.Event()
    if listener is not None:
        listener.start()
    worker = asyncio.create_task(dispatcher.run(stop), name="in-process-worker")
    webhook_wakeup = Wakeup()
    context.after_enqueue.append(webhook_wakeup.notify)
    webhook_metrics = WebhookMetrics(context.metrics.registry)
    try:
        async with webhook_sender_running(
            settings, context.sessions, metrics=webhook_metrics, wakeup=webhook_wakeup
        ):
            await server.serve()  # returns after SIGTERM/SIGINT (uvicorn handles the signals)
    finally:
        stop.set()
        await worker
        if listener is not None:
            await listener.stop()
        await close_channels(channels)
