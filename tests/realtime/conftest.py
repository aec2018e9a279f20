"""``fanout_service``: a running service for each way frames cross between processes — the
in-process hub (SQLite), PostgreSQL NOTIFY, and a NATS server (``NOTIFIER_FANOUT_URL``, on
PostgreSQL) — for the realtime tests that concern the fan-out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from notifier.settings import Settings
from tests.support.nats import NATS_URL, require_nats
from tests.support.service import RunningService, make_settings, running_service


@pytest.fixture(
    scope="session",
    params=[
        "sqlite",
        pytest.param("notify", marks=pytest.mark.postgres),
        pytest.param("nats", marks=pytest.mark.postgres),
    ],
)
def fanout_settings(request: pytest.FixtureRequest) -> Settings:
    if request.param == "sqlite":
        return make_settings(request.getfixturevalue("sqlite_db_url"))
    pg_url = request.getfixturevalue("pg_url")
    return make_settings(pg_url, fanout_url=NATS_URL if request.param == "nats" else None)


@pytest.fixture(scope="session")
async def fanout_service(fanout_settings: Settings) -> AsyncIterator[RunningService]:
    if fanout_settings.fanout_url is not None:
        await require_nats(fanout_settings.fanout_url)
    async with running_service(fanout_settings) as running:
        yield running
