"""The ``notifier`` command: ``serve`` (API), ``worker`` (dispatch), ``migrate``, and ``run``
(API and worker in one process on SQLite: the embedded default).

It lives in ``workers`` because it is the one place that knows both the API and the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from notifier.api import create_app
from notifier.api.context import ServiceContext
from notifier.api.server import build_server
from notifier.embedded import with_development_secrets
from notifier.settings import Settings
from notifier.storage.db import create_engine
from notifier.storage.migrate import SchemaBehindError, ensure_schema_current, upgrade_to_head

log = logging.getLogger("notifier")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notifier", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the HTTP API"),
        ("run", "API + worker on the embedded default"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--host", default=None, help="default NOTIFIER_HOST or 127.0.0.1")
        command.add_argument("--port", type=int, default=None, help="default NOTIFIER_PORT or 8000")
    commands.add_parser("worker", help="run a dispatch worker")
    commands.add_parser("migrate", help="apply database migrations")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    if getattr(args, "host", None):
        settings = settings.model_copy(update={"host": args.host})
    if getattr(args, "port", None) is not None:
        settings = settings.model_copy(update={"port": args.port})
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        if args.command == "migrate":
            _run(_migrate(settings))
        elif args.command == "serve":
            _run(_serve(settings))
        elif args.command == "worker":
            _run(_worker(settings))
        elif args.command == "run":
            _run(_run_embedded(settings))
    except SchemaBehindError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # settings that cannot work
        print(f"notifier: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (uvicorn[standard] brings it), as uvicorn would."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _migrate(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    print("notifier: database schema is up to date")


async def _check_schema(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await ensure_schema_current(engine)
    finally:
        await engine.dispose()


async def _serve(settings: Settings) -> None:
    await _check_schema(settings)
    context = ServiceContext.from_settings(settings)
    server = build_server(create_app(settings, context=context), settings)
    _freeze_what_lives_forever()
    try:
        await server.serve()
    finally:
        await context.aclose()


def _freeze_what_lives_forever() -> None:
    """Move everything allocated so far (modules, the app and its routes, pydantic's and
    SQLAlchemy's caches) out of the cyclic collector's sight: a full collection walked all of
    it again and held the event loop for tens of milliseconds, the slowest requests' wait
    (bench/RESULTS.md, scenario 3). The worker does the same (runner.py)."""
    gc.freeze()


async def _worker(settings: Settings) -> None:
    from workers.runner import run_worker_process

    await _check_schema(settings)
    await run_worker_process(settings)


async def _run_embedded(settings: Settings) -> None:
    settings, dev_key = with_development_secrets(settings)
    engine = create_engine(settings.database_url)
    if settings.is_sqlite:
        await upgrade_to_head(engine)  # the embedded default owns its SQLite file
    await engine.dispose()
    await _check_schema(settings)
    context = ServiceContext.from_settings(settings)
    base = f"http://{settings.host}:{settings.port}"
    if dev_key:
        print(
            f"notifier: development API key (kept in the SQLite file's .dev-secrets.json):\n"
            f"  {dev_key}\n"
            f"  curl -H 'Authorization: Bearer {dev_key}' {base}/v1/users/alice/notifications",
            flush=True,
        )
    server = build_server(create_app(settings, context=context), settings)
    _freeze_what_lives_forever()
    try:
        from workers.runner import run_in_process_worker

        await run_in_process_worker(settings, context, server)
    finally:
        await context.aclose()


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


if __name__ == "__main__":
    sys.exit(main())
