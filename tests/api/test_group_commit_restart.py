"""The group writer's held connections (``GroupCommit`` on PostgreSQL) after the server dropped
them, as a database restart does: the next enqueues still answer 202, each row stored once,
where a pooled connection's pre-ping would have found the loss before the statement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from notifier.storage import enqueue_group
from notifier.storage.db import create_engine
from tests.api.helpers import new_user, notification_body, notifications_of
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.service import RunningService, make_settings, migrate, running_service

pytestmark = pytest.mark.postgres


@pytest.fixture
async def service(pg_url: str) -> AsyncIterator[RunningService]:
    # A database of its own: the test terminates every connection that wrote an enqueue.
    url = await create_pg_database("notifier_held")
    try:
        await migrate(url)
        async with running_service(make_settings(url)) as running:
            yield running
    finally:
        await drop_pg_database(url)


async def _enqueue(service: RunningService, user: str, count: int) -> list[int]:
    async with service.client() as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/notifications", json=notification_body(user, title=f"n{i}"))
                for i in range(count)
            )
        )
    return [response.status_code for response in responses]


async def _terminate_enqueue_connections(service: RunningService) -> int:
    """Ends the server side of every idle connection whose last statement was an enqueue's
    (the group writers' held ones): what a restart does to them."""
    engine = create_engine(service.settings.database_url)
    try:
        async with engine.connect() as admin:
            ended = await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND state = 'idle' AND query LIKE '%INSERT INTO notifications%'"
                )
            )
            return len(ended.all())
    finally:
        await engine.dispose()


async def test_enqueues_after_the_held_connections_were_dropped_succeed_once(
    service: RunningService,
) -> None:
    user = new_user()
    assert await _enqueue(service, user, 20) == [202] * 20  # the writers hold connections
    assert await _terminate_enqueue_connections(service) >= 1

    assert await _enqueue(service, user, 1) == [202]
    assert await _enqueue(service, user, 10) == [202] * 10
    assert await notifications_of(service, user) == 31


async def test_a_group_committed_before_its_connection_was_lost_is_stored_once(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ambiguous loss: the server committed, the answer never arrived.
    real_insert = enqueue_group.insert_prepared
    lost = []

    async def commit_then_lose(*args: Any, **kwargs: Any) -> None:
        await real_insert(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise sa_exc.OperationalError(None, None, ConnectionError("lost"), True)

    monkeypatch.setattr(enqueue_group, "insert_prepared", commit_then_lose)
    user = new_user()
    async with service.client() as client:
        response = await client.post("/v1/notifications", json=notification_body(user))
        assert response.status_code == 202, response.text
        read = await client.get(f"/v1/notifications/{response.json()['id']}")
        assert read.status_code == 200, read.text
    assert lost
    assert await notifications_of(service, user) == 1
