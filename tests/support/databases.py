"""Throw-away databases for tests: a SQLite file, or a PostgreSQL database created for the run
and dropped after it. PostgreSQL being unreachable fails the tests that need it, naming the URL;
it never skips them."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "NOTIFIER_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def _asyncpg_dsn(sqlalchemy_url: str) -> str:
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


async def _admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is unreachable at {PG_ADMIN_URL} ({type(exc).__name__}: {exc}); "
            "start it or point NOTIFIER_TEST_PG_URL at one",
            pytrace=False,
        )


async def _admin_execute(statement: str) -> None:
    connection = await _admin_connection()
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_pg_database(prefix: str = "notifier_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def clone_pg_database(template_url: str, prefix: str = "notifier_test") -> str:
    """A new database, a copy of ``template_url``'s (which nobody may be connected to)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template_url).database}"')
    return make_url(template_url).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(url: str) -> None:
    await _admin_execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / f'notifier-{uuid.uuid4().hex[:8]}.db'}"
