"""The unread counter's triggers on PostgreSQL: bulk loads as the benchmarks make them (replica
role, COPY, TRUNCATE), which triggers each kind of statement calls (the workers' status
updates call none), and a count that reads the counter's row, not the notifications."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from notifier.models import Notification, UserUnreadCount
from notifier.storage.db import create_engine
from notifier.storage.notifications import unread_count
from tests.api.helpers import new_user
from tests.api.unread_counts import drift, migrate_to, notification_rows
from tests.support.databases import create_pg_database, drop_pg_database


@pytest.fixture
async def fresh_pg() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own, at head: these tests TRUNCATE."""
    url = await create_pg_database("notifier_unread_counter")
    try:
        await migrate_to(url, "head")
        yield url
    finally:
        await drop_pg_database(url)


_SEED = """
INSERT INTO notifications (
    id, user_id, title, message, notification_type, priority, priority_rank, channels,
    is_read, notification_metadata, status, retry_count, created_at, updated_at)
SELECT gen_random_uuid(), $1 || (g % 3), 'Old ' || g, 'm', 'info', 'normal', 2,
       '["websocket"]'::jsonb, g % 4 = 0, '{}'::jsonb,
       CASE WHEN g % 5 = 0 THEN 'cancelled' ELSE 'delivered' END, 0, now(), now()
FROM generate_series(1, $2) AS g
"""

_DRIFTED = """
SELECT * FROM user_unread_counts c FULL JOIN (
    SELECT user_id, count(*) AS n FROM notifications
    WHERE is_read = false AND status <> 'cancelled' GROUP BY user_id) t USING (user_id)
WHERE coalesce(c.unread, 0) <> coalesce(t.n, 0)
"""


@pytest.mark.postgres
async def test_bulk_loads_like_the_benchmarks_keep_the_counter(fresh_pg: str) -> None:
    dsn = make_url(fresh_pg).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        # bench/data.py's insert_settled: one INSERT ... SELECT generate_series with the
        # foreign-key triggers off (replica role), which would skip ordinary triggers too.
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute(_SEED, "bulk-", 3000)
        assert await connection.fetch(_DRIFTED) == []
        # 3000 rows, 750 read, 600 cancelled, 150 of them both.
        assert await connection.fetchval("SELECT sum(unread) FROM user_unread_counts") == 1800
        # COPY fires the statement-level insert trigger too.
        rows = await connection.fetch("SELECT * FROM notifications WHERE user_id = 'bulk-1'")
        columns = list(rows[0].keys())
        copied = [
            tuple(
                uuid.uuid4() if c == "id" else "copied" if c == "user_id" else r[c] for c in columns
            )
            for r in rows
        ]
        assert (
            await connection.copy_records_to_table("notifications", records=copied, columns=columns)
            == f"COPY {len(rows)}"
        )
        assert await connection.fetch(_DRIFTED) == []
        assert await connection.fetchval(
            "SELECT unread FROM user_unread_counts WHERE user_id = 'copied'"
        ) == await connection.fetchval(
            "SELECT unread FROM user_unread_counts WHERE user_id = 'bulk-1'"
        )
        # TRUNCATE fires no DELETE trigger: a TRUNCATE trigger of its own empties the counters.
        await connection.execute("TRUNCATE notifications CASCADE")
        assert await connection.fetchval("SELECT count(*) FROM user_unread_counts") == 0
    finally:
        await connection.close()


_COPY_ROWS = """
INSERT INTO notifications (
    id, user_id, title, message, notification_type, priority, priority_rank, channels,
    is_read, notification_metadata, status, retry_count, created_at, updated_at)
SELECT gen_random_uuid(), user_id, title, message, notification_type, priority, priority_rank,
       channels, is_read, notification_metadata, status, retry_count, created_at, updated_at
FROM notifications WHERE user_id IN ('{0}', '{1}')
"""


async def _triggers_called(connection: AsyncConnection, statement: str) -> dict[str, int]:
    """Runs ``statement`` under EXPLAIN ANALYZE, which lists each trigger called and how often."""
    plan = await connection.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {statement}")
    found = (re.search(r"Trigger (notifications_unread_\w+): .*calls=(\d+)", r[0]) for r in plan)
    return {m.group(1): int(m.group(2)) for m in found if m}


@pytest.mark.postgres
async def test_which_triggers_each_kind_of_statement_calls(fresh_pg: str) -> None:
    user, other = "reader", "other"
    engine = create_engine(fresh_pg)
    try:
        async with engine.connect() as connection:
            await connection.execute(insert(Notification), notification_rows([user, other]))
            # A statement inserting for several users: one call.
            assert await _triggers_called(connection, _COPY_ROWS.format(user, other)) == {
                "notifications_unread_insert": 1
            }
            # The workers' updates: the status moves on, the row stays counted: no call.
            for status in ("dispatching", "delivered", "failed"):
                assert (
                    await _triggers_called(
                        connection,
                        f"UPDATE notifications SET status = '{status}', lease_owner = 'w', "
                        "next_attempt_at = now()",
                    )
                    == {}
                )
            # Mark-all-read: one call per row, which only notes its delta, and one fold.
            assert await _triggers_called(
                connection,
                f"UPDATE notifications SET is_read = true, read_at = now() "
                f"WHERE user_id = '{user}' AND is_read = false",
            ) == {"notifications_unread_update": 10, "notifications_unread_update_fold": 1}
            # Cancelling: one call per row that stops being counted.
            assert await _triggers_called(
                connection,
                f"UPDATE notifications SET status = 'cancelled' "
                f"WHERE user_id = '{other}' AND title IN ('t1', 't3')",
            ) == {"notifications_unread_update": 4}
            assert await drift(connection) == {}
            kept = {
                u: int(n)
                for u, n in await connection.execute(
                    select(UserUnreadCount.user_id, UserUnreadCount.unread)
                )
            }
            assert kept == {user: 0, other: 6}
            await connection.rollback()
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_the_count_reads_no_row_per_unread_notification(fresh_pg: str) -> None:
    """For a user with 2000 unread notifications and none scheduled, the statement that
    ``unread_count`` runs reads the counter's row and not one notification."""
    user = new_user()
    engine = create_engine(fresh_pg)
    statements: list[str] = []

    def capture(_c: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    try:
        async with engine.begin() as connection:
            rows = [
                {**r, "id": uuid.uuid4(), "send_at": None} for r in notification_rows([user]) * 400
            ]
            await connection.execute(insert(Notification), rows)
            await connection.exec_driver_sql("ANALYZE notifications")
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        async with AsyncSession(engine) as session:
            assert await unread_count(session, user) == 2000
        (sql,) = [s for s in statements if "user_unread_counts" in s]
        async with engine.connect() as connection:
            await connection.exec_driver_sql(f"PREPARE unread_now AS {sql}")
            result = await connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE unread_now('{user}', now())"
            )
            plan = "\n".join(row[0] for row in result)
    finally:
        await engine.dispose()
    assert "Index Scan using pk_user_unread_counts" in plan, plan
    assert re.search(r"Index Only Scan using idx_notifications_user_unread .*rows=0 ", plan), plan
