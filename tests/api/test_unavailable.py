"""A database that goes away makes the API answer 503 JSON ("unavailable"), never a stack trace;
liveness stays up while readiness goes down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.helpers import assert_error, new_user, notification_body
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.service import RunningService, make_settings, migrate, running_service


@pytest.fixture
async def pg_service_losing_its_database() -> AsyncIterator[tuple[RunningService, str]]:
    url = await create_pg_database("notifier_down")
    try:
        await migrate(url)
        async with running_service(make_settings(url)) as running:
            yield running, url
    finally:
        await drop_pg_database(url)


async def _check_unavailable(running: RunningService) -> None:
    user = new_user()
    async with running.client() as client:
        enqueue = await client.post("/v1/notifications", json=notification_body(user))
        inbox = await client.get(f"/v1/users/{user}/notifications")
        ready = await client.get("/readyz")
        live = await client.get("/healthz")
    for response in (enqueue, inbox, ready):
        error = assert_error(response, 503, "unavailable")
        assert "Traceback" not in error["message"]
        assert "sqlalchemy" not in response.text.lower()
    assert enqueue.headers.get("retry-after")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}


@pytest.mark.postgres
async def test_postgres_database_gone_is_503(
    pg_service_losing_its_database: tuple[RunningService, str],
) -> None:
    running, url = pg_service_losing_its_database
    user = new_user()
    async with running.client() as client:
        # Up first: the pool holds live connections when the database disappears.
        before = await client.post("/v1/notifications", json=notification_body(user))
        assert before.status_code == 202, before.text
        assert (await client.get("/readyz")).status_code == 200
    await drop_pg_database(url)
    await _check_unavailable(running)


async def test_sqlite_database_unreachable_is_503(tmp_path: Path) -> None:
    # A SQLite file in a directory that does not exist cannot be opened.
    url = sqlite_url(tmp_path / "missing-directory")
    async with running_service(make_settings(url)) as running:
        await _check_unavailable(running)
