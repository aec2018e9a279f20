"""The bench's PostgreSQL: the server it creates its databases on, connections that wait out
the server's connection limit, migrations."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "NOTIFIER_BENCH_PG_URL",
    os.environ.get("NOTIFIER_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"),
)


def pg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def connect(url: str, *, patience: float = 120.0, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect, waiting (up to ``patience`` seconds) while the server is at its
    connection limit: other test suites share this PostgreSQL."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return await asyncpg.connect(pg_dsn(url), timeout=10, **kwargs)
        except (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def admin_connection(admin_url: str) -> asyncpg.Connection:
    try:
        return await connect(admin_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(
            f"bench: PostgreSQL is unreachable at {admin_url} ({type(exc).__name__}: {exc}); "
            "start it or set NOTIFIER_BENCH_PG_URL"
        ) from exc


async def migrate_database(url: str) -> None:
    from notifier.storage.db import create_engine
    from notifier.storage.migrate import upgrade_to_head

    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
