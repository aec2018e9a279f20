"""The ``notifier`` command: ``serve`` (API), ``worker`` (dispatch), ``migrate``, ``run`` (API
and worker in one process on SQLite: the embedded default) and ``secrets``. Each command's
wiring is in ``roles``; here are its words, and the one-line errors.

Its help text for users is ``_DESCRIPTION`` and ``_COMMANDS``, not this docstring.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from notifier.channels.registry import check_trigger_channels
from notifier.secret_values import secrets_env
from notifier.settings import Settings, settings_problem
from notifier.storage.migrate import SchemaBehindError
from notifier.storage.startup import DatabaseUnusable
from runtime import roles

_DESCRIPTION = """\
notifier delivers notifications: producers enqueue them over HTTP (or report task progress and
logs), and dispatch workers deliver them over websocket, email (SMTP), browser (Web Push) and
sms (Twilio), retrying what fails.

Settings come from NOTIFIER_* environment variables (README.md, "Configuration"). For a first
try, `notifier run` needs none of them. In production: `notifier secrets` for the keys,
`notifier migrate` once, then `notifier serve` and `notifier worker`.
"""

# name: (one-line help, description)
_COMMANDS = {
    "serve": (
        "run the HTTP API and the WebSocket endpoint",
        "Run the HTTP API and the WebSocket endpoint on --host/--port. Needs NOTIFIER_API_KEYS "
        "and NOTIFIER_TOKEN_SECRET (`notifier secrets` prints strong values) and a database "
        "that `notifier migrate` brought up to date. Run as many as you like behind a load "
        "balancer, on one PostgreSQL database.",
    ),
    "worker": (
        "run a dispatch worker",
        "Run a dispatch worker: it claims due notifications from the database and delivers "
        "them on their channels. Run as many as you like; on SIGTERM a worker finishes what "
        "it is sending, then exits.",
    ),
    "migrate": (
        "bring the database schema up to date, then exit",
        "Apply the database migrations up to the latest, then exit. Run it once before "
        "starting `serve` and `worker` after an install or an upgrade: they refuse to start "
        "on a schema that is behind.",
    ),
    "run": (
        "API and worker in one process on SQLite, for development",
        "The embedded default: the API and a worker in one process, on the SQLite file "
        "./notifier.db (NOTIFIER_DATABASE_URL), migrated at start. It makes its own "
        "development API key, token secret and VAPID key, kept beside the SQLite file, and "
        "prints the key.",
    ),
    "secrets": (
        "print strong secrets for a .env file",
        "Print a new producer API key, user-token secret and VAPID key as NOTIFIER_* lines for "
        "a .env file (`notifier secrets >> .env`). Each run prints new ones.",
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"notifier {_version()}")
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    for name, (summary, description) in _COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=description)
        if name in ("serve", "run"):
            command.add_argument(
                "--host", default=None, help="address to listen on (NOTIFIER_HOST, 127.0.0.1)"
            )
            command.add_argument(
                "--port", type=int, default=None, help="port to listen on (NOTIFIER_PORT, 8000)"
            )
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("notifier")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "secrets":
        print(secrets_env(), end="")
        return 0
    try:
        settings = Settings()
        check_trigger_channels(settings)
    except (ValidationError, SettingsError) as exc:
        print(f"notifier: {settings_problem(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "host", None):
        settings = settings.model_copy(update={"host": args.host})
    if getattr(args, "port", None) is not None:
        settings = settings.model_copy(update={"port": args.port})
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        run(_command(args.command, settings))
    # Told in one line: a schema behind, a database out of reach, settings that cannot work.
    except (SchemaBehindError, DatabaseUnusable, ValueError) as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def _command(name: str, settings: Settings) -> None:
    if name in ("serve", "worker"):
        settings.refuse_weak_secrets()
    if name == "migrate":
        await roles.migrate(settings)
    elif name == "serve":
        await roles.serve(settings)
    elif name == "worker":
        await roles.run_worker_process(settings)
    elif name == "run":
        await roles.run_embedded(settings)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (uvicorn[standard] brings it), as uvicorn would."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


if __name__ == "__main__":
    sys.exit(main())
