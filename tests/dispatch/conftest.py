"""Per-test databases and peers for the dispatch tests.

``db_url`` runs a test once on SQLite and once on PostgreSQL, each time on an empty database
(a fresh SQLite file; the scratch PostgreSQL database, truncated), so a worker never meets
another test's rows. ``fresh_pg_url`` is the same for PostgreSQL-only tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from notifier.vapid import generate_private_key
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.service import migrate

VAPID_SUBJECT = "mailto:ops@example.com"


@pytest.fixture(scope="session")
async def pg_scratch(pg_url: str) -> AsyncIterator[str]:
    """A migrated PostgreSQL database for the dispatch tests, emptied before each one
    (``TRUNCATE`` takes milliseconds; creating and dropping a database takes seconds)."""
    url = await create_pg_database("notifier_dispatch")
    await migrate(url)
    yield url
    await drop_pg_database(url)


async def emptied(url: str) -> str:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        names = ", ".join(f'"{row["tablename"]}"' for row in tables)
        await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The scratch PostgreSQL database for the postgres run; None for SQLite."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_scratch"))


@pytest.fixture
async def db_url(backend: str | None, tmp_path: Path) -> str:
    """An empty database of this test's own, on each backend in turn."""
    if backend is None:
        url = sqlite_url(tmp_path)
        await migrate(url)
        return url
    return await emptied(backend)


@pytest.fixture
async def fresh_pg_url(pg_url: str, pg_scratch: str) -> str:
    """An empty PostgreSQL database of this test's own (the test needs PostgreSQL: ``pg_url``)."""
    return await emptied(pg_scratch)


@pytest.fixture
async def smtp_peer() -> AsyncIterator[DispatchSmtpPeer]:
    """Overrides the suite's ``smtp_peer`` (tests/peers/fixtures.py) with the dispatch peer;
    ``twilio_peer`` and ``push_peer`` come from there as they are."""
    async with DispatchSmtpPeer() as peer:
        yield peer


@pytest.fixture(scope="session")
def vapid_key() -> str:
    return generate_private_key()


@pytest.fixture
def push_settings(vapid_key: str) -> dict[str, object]:
    return {
        "vapid_private_key": vapid_key,
        "vapid_subject": VAPID_SUBJECT,
        "push_allow_private_endpoints": True,
        "push_ttl_seconds": 600,
    }
