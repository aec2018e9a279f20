"""Migration 0002 (the inbox's unread index) up and down on both databases, and on PostgreSQL
the unread count reading that index alone, as a prepared (generic) plan too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from notifier.storage.db import create_engine
from notifier.storage.migrate import alembic_config, upgrade_to_head
from notifier.storage.notifications import unread_count
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url

INDEX = "idx_notifications_user_unread"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    url = await create_pg_database("notifier_unread_index")
    try:
        yield url
    finally:
        await drop_pg_database(url)


async def _indexes(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        found = await connection.run_sync(lambda c: inspect(c).get_indexes("notifications"))
    return {str(index["name"]) for index in found}


async def test_upgrade_downgrade_upgrade(database: str) -> None:
    engine = create_engine(database)
    try:
        await upgrade_to_head(engine)
        assert INDEX in await _indexes(engine)
        # alembic's commands run their own event loop in env.py, hence the thread.
        await asyncio.to_thread(command.downgrade, alembic_config(database), "0001")
        assert INDEX not in await _indexes(engine)
        await asyncio.to_thread(command.upgrade, alembic_config(database), "head")
        assert INDEX in await _indexes(engine)
    finally:
        await engine.dispose()


# A user with many read notifications and one unread that is scheduled for later: the count
# must range-scan the partial index (a handful of entries), not the user's every row through
# idx_notifications_user_id. Statistics make the choice deterministic; on an empty table the two
# indexes cost the same and the planner may pick either.
_SEED = """
INSERT INTO notifications (
    id, user_id, title, message, notification_type, priority, priority_rank, channels,
    is_read, notification_metadata, status, retry_count, created_at, updated_at, send_at)
SELECT gen_random_uuid(), 'reader-' || (g % 20), 'Old ' || g, 'm', 'info', 'normal', 2,
       '["websocket"]'::jsonb, g > 1, '{}'::jsonb, 'delivered', 0, now(), now(),
       CASE WHEN g = 1 THEN now() + interval '1 day' ELSE now() - interval '1 day' END
FROM generate_series(1, 20000) AS g
"""


@pytest.mark.postgres
async def test_the_unread_count_reads_only_the_index() -> None:
    url = await create_pg_database("notifier_unread_plan")
    engine = create_engine(url)
    statements: list[str] = []

    def capture(_c: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    try:
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            await connection.exec_driver_sql(_SEED)
            await connection.exec_driver_sql("ANALYZE notifications")
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        async with AsyncSession(engine) as session:
            # reader-1 has 1000 rows; the one unread is not due yet, so it is not counted.
            assert await unread_count(session, "reader-1") == 0
        (count_sql,) = [s for s in statements if "count(*)" in s]
        async with engine.connect() as connection:
            # A generic plan, as asyncpg's prepared statements get after a few runs: the
            # partial index must be chosen without knowing the parameters.
            await connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            await connection.exec_driver_sql(f"PREPARE unread AS {count_sql}")
            plan = await connection.exec_driver_sql("EXPLAIN EXECUTE unread('reader-1', now())")
            text_plan = "\n".join(row[0] for row in plan)
    finally:
        await engine.dispose()
        await drop_pg_database(url)
    assert f"Index Only Scan using {INDEX}" in text_plan, text_plan
