"""The uvicorn server that serves the API, built from settings: ``build_server(app, settings)``.

The CLI (``notifier serve``/``run``) and the test suite's real server both come from here, so
that tests run with the limits production has: the header deadline and the connection cap
(notifier/api/connections.py), the WebSocket options, the access log switch.

Open files: every socket is a file descriptor, and a process past its ``RLIMIT_NOFILE`` cannot
accept connections at all (nor open a database connection). At start the soft limit is raised
to the hard one; if ``NOTIFIER_MAX_CONNECTIONS`` still does not fit below it, with
``FD_HEADROOM`` kept for everything that is not a client socket and ``PROBE_RESERVE`` for the
probes answered past the cap, the cap is lowered to what fits and a warning says so. Past the
cap a client gets a 503 (a probe its answer); it never finds the server deaf.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from notifier.api.connections import PROBE_RESERVE, ConnectionLimits, GuardedConfig
from notifier.settings import Settings

log = logging.getLogger("notifier.api.server")

# Descriptors kept for what is not a client socket: the database pool, the listening socket,
# the event loop, log files, a NOTIFY listener, an in-process worker's SMTP and push sessions.
FD_HEADROOM = 256


class Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the caught SIGTERM/SIGINT once it has shut down:
    that would kill this process before the worker drains and the engine closes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def raise_open_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # a sandbox may refuse; keep what we have
            log.warning("could not raise RLIMIT_NOFILE from %d to %d: %s", soft, hard, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft


def connection_cap(max_connections: int, open_file_limit: int) -> int:
    """``max_connections``, lowered to what ``open_file_limit`` leaves after the headroom and
    the probes' reserve."""
    if open_file_limit == resource.RLIM_INFINITY:
        return max_connections
    headroom = min(FD_HEADROOM, open_file_limit // 4)
    return max(1, min(max_connections, open_file_limit - headroom - PROBE_RESERVE))


def connection_limits(settings: Settings) -> ConnectionLimits:
    open_files = raise_open_file_limit()
    cap = connection_cap(settings.max_connections, open_files)
    if cap < settings.max_connections:
        log.warning(
            "NOTIFIER_MAX_CONNECTIONS=%d does not fit this process's open-file limit "
            "(RLIMIT_NOFILE %d, some kept for the database and logs): at most %d connections "
            "are served, the rest get 503. Raise the limit (ulimit -n, or the container's "
            "nofile ulimit) to serve more.",
            settings.max_connections,
            open_files,
            cap,
        )
    return ConnectionLimits(
        header_timeout_seconds=settings.header_timeout_seconds, max_connections=cap
    )


def build_server(app: Any, settings: Settings) -> Server:
    """A server for ``app`` on ``settings.host``:``settings.port``; ``await server.serve()``."""
    config = GuardedConfig(
        app,
        limits=connection_limits(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        # Off unless asked for; when on, tokens are redacted (notifier/api/redaction.py).
        access_log=settings.access_log,
        proxy_headers=True,
        ws_max_size=65_536,
        # Frames are a few hundred bytes: compression buys nothing, and its per-socket zlib
        # state was most of a socket's memory (bench/RESULTS.md, scenario 4).
        ws_per_message_deflate=False,
    )
    if settings.access_log:
        # Asked for, so shown whatever NOTIFIER_LOG_LEVEL is (uvicorn logs it at INFO).
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    return Server(config)
