"""Fixtures shared by the whole suite.

``service`` is parametrized over both databases: every test that uses it runs once on SQLite
and once on PostgreSQL (``NOTIFIER_TEST_PG_URL``, default the local server). Each run gets its
own database, created here and dropped at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.service import RunningService, make_settings, migrate, running_service

# The local peers' fixtures (smtp_peer, twilio_peer, push_peer), for every package.
pytest_plugins = ["tests.peers.fixtures"]


@pytest.fixture(scope="session")
async def pg_url() -> AsyncIterator[str]:
    url = await create_pg_database()
    await migrate(url)
    yield url
    await drop_pg_database(url)


@pytest.fixture(scope="session")
async def sqlite_db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = sqlite_url(Path(tmp_path_factory.mktemp("sqlite")))
    await migrate(url)
    return url


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def database_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_db_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture(scope="session")
async def service(database_url: str) -> AsyncIterator[RunningService]:
    async with running_service(make_settings(database_url)) as running:
        yield running
