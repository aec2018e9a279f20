"""The first contact with the database at start, told in one line when it fails.

A command that cannot reach its database used to die with a hundred-line traceback that never
said which URL it tried. ``explain_database_failure`` turns the failures of that first contact
(server down, unknown host, no such database, login refused, SQLite file that cannot be opened)
into ``DatabaseUnusable``: what failed, at which URL (password hidden), and what to do.
"""

from __future__ import annotations

import socket
import sqlite3

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from notifier.storage.db import is_database_unavailable

_CHECK = "check NOTIFIER_DATABASE_URL"


class DatabaseUnusable(Exception):
    """The database named by NOTIFIER_DATABASE_URL cannot be used; the message says why."""


def shown_url(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return chain


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _sqlstate(chain: list[BaseException]) -> str:
    for cause in chain:
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
    return ""


def _postgres_reason(url: URL, chain: list[BaseException]) -> str | None:
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    state = _sqlstate(chain)
    if state == "3D000":
        return (
            f"database {url.database!r} does not exist on the PostgreSQL server at {where}: "
            f"create it (createdb {url.database}) or {_CHECK}"
        )
    if state.startswith("28"):
        reason = next((_first_line(c) for c in chain if getattr(c, "sqlstate", None)), state)
        return (
            f"the PostgreSQL server at {where} refused the login of {url.username!r} "
            f"({reason}): fix the user or password in NOTIFIER_DATABASE_URL"
        )
    for cause in chain:
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host {url.host!r} ({cause.strerror}): {_CHECK}"
        if isinstance(cause, ConnectionRefusedError):
            return (
                f"nothing accepts connections at {where} (connection refused): is PostgreSQL "
                f"running there? Else {_CHECK}"
            )
        if isinstance(cause, TimeoutError | sa_exc.TimeoutError):
            return f"no answer from {where} in time: is the host reachable? Else {_CHECK}"
    return None


def open_sqlite_file(database_url: str) -> None:
    """Open a SQLite database file once, synchronously, before any engine does; raise
    ``DatabaseUnusable`` if it cannot be. (When aiosqlite fails to open one, its thread outlives
    the failure and, once the event loop has closed, prints a traceback of its own.)"""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    try:
        sqlite3.connect(url.database).close()
    except sqlite3.Error as exc:
        explained = explain_database_failure(database_url, exc)
        if explained is None:
            raise
        raise explained from exc


def explain_database_failure(database_url: str, exc: BaseException) -> DatabaseUnusable | None:
    """A one-line ``DatabaseUnusable`` for a failure to reach or open the database, or None if
    ``exc`` is something else (a bug deserves its traceback)."""
    chain = _causes(exc)
    url = make_url(database_url)
    prefix = f"cannot use the database at {shown_url(database_url)}: "
    if url.get_backend_name() == "sqlite":
        refused = next((c for c in chain if isinstance(c, sqlite3.OperationalError)), None)
        if refused is not None:
            return DatabaseUnusable(
                f"{prefix}{_first_line(refused)}: does the file's folder exist, and may this "
                f"user write there? Else {_CHECK}"
            )
        return None
    reason = _postgres_reason(url, chain)
    if reason is None and is_database_unavailable(exc):
        reason = f"{_first_line(chain[-1])}: {_CHECK}"
    return DatabaseUnusable(prefix + reason) if reason is not None else None
