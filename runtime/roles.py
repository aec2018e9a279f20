"""The roles the ``notifier`` command runs, each wired from settings: ``migrate``, ``serve`` (the
API), ``run_worker_process`` (a worker), ``run_embedded`` (both in one process, sharing the
engine, the in-process fan-out to the API's sockets, and the wake-ups)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.api import create_app
from notifier.api.context import ServiceContext
from notifier.api.server import Server, build_server
from notifier.embedded import with_development_secrets
from notifier.metrics.instruments import ServiceMetrics
from notifier.metrics.recorder import MetricRecorder
from notifier.metrics.webhooks import WebhookMetrics
from notifier.realtime.fanout import Fanout, PostgresFanout
from notifier.realtime.nats_broker import NatsFanout
from notifier.settings import Settings
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.migrate import ensure_schema_current, upgrade_to_head
from notifier.storage.startup import explain_database_failure, open_sqlite_file
from notifier.storage.wakeups import DISPATCH, WEBHOOKS
from workers.observer import MetricsObserver
from workers.runner import WorkerParts, worker_running

log = logging.getLogger("notifier")


@contextlib.asynccontextmanager
async def first_contact(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine for the command's first use of the database, whose failure to reach or open
    the database is told in one line (``DatabaseUnusable``) rather than a traceback."""
    open_sqlite_file(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        yield engine
    except Exception as exc:
        explained = explain_database_failure(settings.database_url, exc)
        if explained is None:
            raise
        raise explained from exc
    finally:
        await engine.dispose()


async def migrate(settings: Settings) -> None:
    async with first_contact(settings) as engine:
        await upgrade_to_head(engine)
    print("notifier: database schema is up to date")


async def check_schema(settings: Settings) -> None:
    async with first_contact(settings) as engine:
        await ensure_schema_current(engine)


# A worker's young generation is collected every this many allocations (Python's default: 700).
# A webhook sender allocates a few hundred objects per request (aiohttp's request and response,
# the claim's rows, the outcome): at 700, 0.21 s of collections in a 30,000-event run, about 7 us
# an event, against 0.04 s here (bench/RESULTS.md "Webhook idle flush and collector A/B"). The
# API keeps the default: its collections are short pauses in its requests' latency.
WORKER_YOUNG_THRESHOLD = 20_000


def freeze_what_lives_forever(*, young_threshold: int | None = None) -> None:
    """Move everything allocated so far (modules, the app and its routes, the channels,
    pydantic's and SQLAlchemy's caches) out of the cyclic collector's sight: a full collection
    walked all of it again and held the event loop for tens of milliseconds, the slowest
    requests' wait (bench/RESULTS.md, scenario 3); with a busy dispatcher it was a sixth of the
    worker's CPU. ``young_threshold``: collect the young generation that much less often."""
    gc.freeze()
    if young_threshold is not None:
        gc.set_threshold(young_threshold, *gc.get_threshold()[1:])


@dataclass
class ApiRole:
    """The API wired from settings: its context (engine, hub, fan-out, wake-ups, renderer),
    the app, and the server that serves it (``await server.serve()``)."""

    context: ServiceContext
    app: FastAPI
    server: Server


def nats_fanout(settings: Settings, role: str) -> NatsFanout | None:
    """The NATS broker when ``NOTIFIER_FANOUT_URL`` names one (docs/architecture.md, "Fan-out
    brokers"); None for the default, NOTIFY on PostgreSQL and the in-process hub on SQLite."""
    if settings.fanout_url is None:
        return None
    if settings.is_sqlite:
        raise ValueError(
            "NOTIFIER_FANOUT_URL is set, but NOTIFIER_DATABASE_URL is SQLite, which one process "
            "serves alone: its frames stay in that process; unset NOTIFIER_FANOUT_URL or use "
            "PostgreSQL"
        )
    return NatsFanout(settings.fanout_url, database_url=settings.database_url, name=role)


async def first_contact_broker(fanout: Fanout) -> None:
    """Refuse to start, in one line naming the setting, when the NATS server does not answer
    (``FanoutUnreachable``); once connected, its client reconnects by itself."""
    if isinstance(fanout, NatsFanout):
        await fanout.connect()


def api_role(settings: Settings) -> ApiRole:
    context = ServiceContext.from_settings(settings, fanout=nats_fanout(settings, "notifier-api"))
    app = create_app(settings, context=context)
    return ApiRole(context, app, build_server(app, settings))


async def serve(settings: Settings) -> None:
    """``notifier serve``: the API, until SIGTERM/SIGINT (uvicorn handles the signals)."""
    await check_schema(settings)
    api = api_role(settings)
    try:
        await first_contact_broker(api.context.fanout)
    except ValueError:
        await api.context.aclose()
        raise
    freeze_what_lives_forever()
    try:
        await api.server.serve()
    finally:
        await api.context.aclose()


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_worker_process(settings: Settings) -> None:
    """``notifier worker``: claim and send until SIGTERM/SIGINT, then drain and return."""
    await check_schema(settings)
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
    if settings.worker_metrics_port is not None:
        start_http_server(settings.worker_metrics_port, registry=metrics.registry)
    fanout = nats_fanout(settings, "notifier-worker") or PostgresFanout(engine)
    try:
        await first_contact_broker(fanout)
    except ValueError:
        await engine.dispose()
        raise
    parts = WorkerParts(
        sessions=sessions,
        fanout=fanout,
        observer=MetricsObserver(metrics, recorder),
        webhook_metrics=WebhookMetrics(metrics.registry),
        metrics_registry=metrics.registry,
    )
    stop = asyncio.Event()
    install_stop_signals(stop)
    recorder.start()
    try:
        async with worker_running(settings, parts) as worker:
            freeze_what_lives_forever(young_threshold=WORKER_YOUNG_THRESHOLD)
            await worker.until(stop)
    finally:
        await recorder.stop()
        await fanout.aclose()
        await engine.dispose()


async def run_embedded(settings: Settings) -> None:
    """``notifier run``: the API and a worker in this process, on the SQLite file by default.
    The worker shares the API's engine, publishes straight to its sockets, and is woken by
    its commits."""
    settings, dev_key = with_development_secrets(settings)
    if settings.is_sqlite:
        async with first_contact(settings) as engine:
            await upgrade_to_head(engine)  # the embedded default owns its SQLite file
    await check_schema(settings)
    api = api_role(settings)
    context = api.context
    try:
        await first_contact_broker(context.fanout)
    except ValueError:
        await context.aclose()
        raise
    base = f"http://{settings.host}:{settings.port}"
    if dev_key:
        print(
            f"notifier: development API key (kept in the SQLite file's .dev-secrets.json):\n"
            f"  {dev_key}\n"
            f"  curl -H 'Authorization: Bearer {dev_key}' {base}/v1/users/alice/notifications",
            flush=True,
        )
    parts = WorkerParts(
        sessions=context.sessions,
        fanout=context.fanout,
        observer=MetricsObserver(context.metrics, context.recorder),
        webhook_metrics=WebhookMetrics(context.metrics.registry),
        metrics_registry=context.metrics.registry,
    )
    context.wakeups.subscribe(DISPATCH, parts.dispatch_wakeup.notify)
    context.wakeups.subscribe(WEBHOOKS, parts.webhook_wakeup.notify)
    freeze_what_lives_forever()
    try:
        async with worker_running(settings, parts):
            await api.server.serve()  # returns after SIGTERM/SIGINT (uvicorn handles them)
    finally:
        await context.aclose()
