"""The inbox's ``unread_count`` comes from a per-user counter that the triggers of migration 0003
keep (``user_unread_counts``). On both databases: the count seen through the API after each
kind of write the service makes, the counter against a direct COUNT(*) after a mixed sequence
and after bulk SQL, and the migration's backfill across a downgrade and upgrade. On PostgreSQL,
which triggers each kind of statement calls (the workers' status updates call none)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy import case, delete, event, func, insert, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from notifier.models import Notification, UserUnreadCount
from notifier.models.unread import user_unread_deltas
from notifier.storage.db import create_engine
from notifier.storage.migrate import alembic_config
from notifier.storage.notifications import unread_count
from tests.api.helpers import new_user, notification_body
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.service import RunningService

COUNTED = (Notification.is_read.is_(False), Notification.status != "cancelled")


async def unread(client: httpx.AsyncClient, user: str) -> int:
    response = await client.get(f"/v1/users/{user}/notifications")
    assert response.status_code == 200, response.text
    return int(response.json()["unread_count"])


async def enqueue(client: httpx.AsyncClient, user: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/notifications", json=notification_body(user, **fields))
    assert response.status_code == 202, response.text
    return dict(response.json())


async def _scalar(connection: AsyncConnection, query: Any) -> int:
    return int((await connection.execute(query)).scalar_one())


async def drift(connection: AsyncConnection, users: list[str] | None = None) -> dict[str, Any]:
    """Users whose counter differs from a COUNT(*) of their counted rows (all users if None),
    as {user: (counter, count)}; and the deltas table, which must be empty between
    statements, under "deltas"."""
    counted = select(Notification.user_id, func.count().label("n")).where(*COUNTED)
    counters = select(UserUnreadCount.user_id, UserUnreadCount.unread)
    if users is not None:
        counted = counted.where(Notification.user_id.in_(users))
        counters = counters.where(UserUnreadCount.user_id.in_(users))
    counts = {
        u: int(n) for u, n in await connection.execute(counted.group_by(Notification.user_id))
    }
    kept = {u: int(n) for u, n in await connection.execute(counters)}
    found: dict[str, Any] = {
        u: (kept.get(u, 0), counts.get(u, 0))
        for u in counts.keys() | kept.keys()
        if kept.get(u, 0) != counts.get(u, 0)
    }
    deltas = await _scalar(connection, select(func.count()).select_from(user_unread_deltas))
    if deltas:
        found["deltas"] = deltas
    return found


async def service_drift(service: RunningService, users: list[str]) -> dict[str, Any]:
    async with service.context.engine.connect() as connection:
        return await drift(connection, users)


# --- through the API, on the service of each database -------------------------------------------


async def test_single_and_batch_enqueues_are_counted(service: RunningService) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    async with service.client() as client:
        assert await unread(client, alice) == 0  # no counter row at all yet
        await enqueue(client, alice)
        assert await unread(client, alice) == 1
        batch = [notification_body(u) for u in (alice, bob, alice, carol, bob, alice)]
        response = await client.post("/v1/notifications/batch", json={"notifications": batch})
        assert response.status_code == 202, response.text
        counts = {u: await unread(client, u) for u in (alice, bob, carol)}
    assert counts == {alice: 4, bob: 2, carol: 1}
    assert await service_drift(service, [alice, bob, carol]) == {}


async def test_mark_read_and_read_all(service: RunningService) -> None:
    user, bystander = new_user(), new_user()
    async with service.client() as client:
        created = [await enqueue(client, user) for _ in range(4)]
        await enqueue(client, bystander)
        path = f"/v1/users/{user}/notifications/{created[0]['id']}/read"
        assert (await client.post(path)).status_code == 200
        assert await unread(client, user) == 3
        assert (await client.post(path)).status_code == 200  # read twice: counted once
        assert await unread(client, user) == 3
        read_all = await client.post(f"/v1/users/{user}/notifications/read-all")
        assert read_all.status_code == 200, read_all.text
        assert read_all.json() == {"updated": 3, "unread_count": 0}
        assert await unread(client, user) == 0
        assert await unread(client, bystander) == 1
        await enqueue(client, user)  # counting starts again from zero
        assert await unread(client, user) == 1
    assert await service_drift(service, [user, bystander]) == {}


async def test_cancelled_notifications_are_not_counted(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        # Not websocket: the fast path sends it at enqueue, leaving nothing to cancel.
        first = await enqueue(client, user, channels=["email"])
        await enqueue(client, user)
        cancelled = await client.post(f"/v1/notifications/{first['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert await unread(client, user) == 1
        # Reading a cancelled notification changes nothing it was counted in.
        read = await client.post(f"/v1/users/{user}/notifications/{first['id']}/read")
        assert read.status_code == 200, read.text
        assert await unread(client, user) == 1
    assert await service_drift(service, [user]) == {}


async def test_a_scheduled_notification_counts_once_due(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        await enqueue(client, user)
        # Far ahead, then cancelled or read: never counted, now or later.
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        cancel_me, read_me = (
            await enqueue(client, user, send_at=later),
            await enqueue(client, user, send_at=later),
        )
        assert (await client.post(f"/v1/notifications/{cancel_me['id']}/cancel")).is_success
        read = await client.post(f"/v1/users/{user}/notifications/{read_me['id']}/read")
        assert read.status_code == 200, read.text
        await enqueue(client, user, send_at=later)  # stays scheduled throughout
        due_at = datetime.now(UTC) + timedelta(seconds=2)
        await enqueue(client, user, send_at=due_at.isoformat())
        assert await unread(client, user) == 1
        deadline = time.monotonic() + 30
        while (count := await unread(client, user)) == 1:
            assert time.monotonic() < deadline, "the scheduled notification never became due"
            await asyncio.sleep(0.1)  # polling the public API while time passes: no event to await
        seen_at = datetime.now(UTC)
    assert count == 2
    assert seen_at >= due_at, "counted before its send_at"
    assert await service_drift(service, [user]) == {}  # the counter counts scheduled rows too


async def test_concurrent_enqueues_for_one_user(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/notifications", json=notification_body(user, title=f"n{i}"))
                for i in range(50)
            )
        )
        assert [r.status_code for r in responses] == [202] * 50, [r.text for r in responses]
        assert await unread(client, user) == 50
    assert await service_drift(service, [user]) == {}


async def test_concurrent_batches_over_the_same_users(service: RunningService) -> None:
    # With an Idempotency-Key each batch is a transaction of its own, not grouped: 20 at once,
    # each naming the same users in another order, must neither deadlock nor lose a count.
    users = [new_user() for _ in range(4)]

    def batch(i: int) -> dict[str, Any]:
        order = users[i % 4 :] + users[: i % 4]
        order = order if i % 2 else order[::-1]
        return {"notifications": [notification_body(u, title=f"b{i}") for u in order]}

    async with service.client() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/notifications/batch",
                    json=batch(i),
                    headers={"Idempotency-Key": f"unread-{uuid.uuid4().hex}"},
                )
                for i in range(20)
            )
        )
        assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses]
        counts = [await unread(client, u) for u in users]
    assert counts == [20] * 4
    assert await service_drift(service, users) == {}


async def test_the_counter_equals_a_count_after_mixed_writes(service: RunningService) -> None:
    users = [new_user() for _ in range(3)]
    a, b, c = users
    async with service.client() as client:
        # email: a websocket channel is sent at enqueue (the fast path), so nothing to cancel
        batch = [notification_body(u, channels=["email"]) for u in (a, b, c, a, b, a)]
        created = (
            await client.post("/v1/notifications/batch", json={"notifications": batch})
        ).json()["notifications"]
        for u in users:
            await enqueue(client, u)
        by_user: dict[str, list[str]] = {}
        for row in created:
            by_user.setdefault(row["user_id"], []).append(row["id"])
        await client.post(f"/v1/users/{a}/notifications/{by_user[a][0]}/read")
        await client.post(f"/v1/notifications/{by_user[a][1]}/cancel")
        await client.post(f"/v1/notifications/{by_user[b][0]}/cancel")
        await client.post(f"/v1/users/{b}/notifications/{by_user[b][0]}/read")
        await client.post(f"/v1/users/{c}/notifications/read-all")
        await enqueue(client, c, send_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
        seen = {u: await unread(client, u) for u in users}
    assert seen == {a: 2, b: 2, c: 0}
    assert await service_drift(service, users) == {}
    counters = select(UserUnreadCount.user_id, UserUnreadCount.unread).where(
        UserUnreadCount.user_id.in_(users)
    )
    async with service.context.engine.connect() as connection:
        kept = {u: int(n) for u, n in await connection.execute(counters)}
    assert kept == {a: 2, b: 2, c: 1}  # c's scheduled row is in the counter, not in the inbox


# --- straight SQL on a database of the test's own, on each database -----------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    url = await create_pg_database("notifier_unread_counter")
    try:
        yield url
    finally:
        await drop_pg_database(url)


def _rows(users: list[str], *, read_every: int = 0, cancel_every: int = 0) -> list[dict[str, Any]]:
    """Notification rows as ``insert(Notification)`` takes them, round-robin over ``users``."""
    now = datetime.now(UTC)
    rows = []
    for i in range(len(users) * 5):
        row = Notification.build(user_id=users[i % len(users)], title=f"t{i}", message="m")
        if read_every and i % read_every == 0:
            row.is_read = True
        if cancel_every and i % cancel_every == 1:
            row.status = "cancelled"
        if i == 3:
            row.send_at = now + timedelta(hours=1)  # scheduled: counted all the same
        # Only the columns 0002 has: these rows are also inserted at that revision.
        values = {
            c.key: getattr(row, c.key)
            for c in Notification.__table__.columns
            if c.key not in _COLUMNS_AFTER_0002
        }
        rows.append(values)
    return rows


_COLUMNS_AFTER_0002 = frozenset(
    {"rendered_parts", "delivery_plan", "cancellation_key"}
)  # 0008, 0009


async def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    # alembic's commands run their own event loop in env.py, hence the thread.
    step = command.downgrade if down else command.upgrade
    await asyncio.to_thread(step, alembic_config(url), revision)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def test_backfill_survives_a_downgrade_and_upgrade(database: str) -> None:
    users = [new_user() for _ in range(4)]
    engine = create_engine(database)
    try:
        await _migrate(database, "0002")
        async with engine.begin() as connection:  # rows from before the counter existed
            await connection.execute(insert(Notification), _rows(users, read_every=3))
        await _migrate(database, "head")
        async with engine.connect() as connection:
            assert await drift(connection) == {}
            assert await _scalar(connection, select(func.count(UserUnreadCount.user_id))) == 4
        await _migrate(database, "0002", down=True)
        assert {"user_unread_counts", "user_unread_deltas"}.isdisjoint(await _tables(engine))
        async with engine.begin() as connection:  # writes while no trigger keeps count
            await connection.execute(insert(Notification), _rows(users[:2], cancel_every=2))
            await connection.execute(
                update(Notification).where(Notification.user_id == users[2]).values(is_read=True)
            )
        await _migrate(database, "head")
        async with engine.connect() as connection:
            assert await drift(connection) == {}
            due = select(func.count()).where(
                Notification.user_id == users[3], *COUNTED, Notification.send_at.is_(None)
            )
            expected = await _scalar(connection, due)
            async with AsyncSession(bind=connection) as session:
                assert await unread_count(session, users[2]) == 0
                # users[3] has the first round's scheduled row (i == 3): not in the inbox yet.
                assert await unread_count(session, users[3]) == expected
        async with engine.begin() as connection:  # and the triggers are back
            await connection.execute(insert(Notification), _rows(users))
            assert await drift(connection) == {}
    finally:
        await engine.dispose()


async def test_bulk_sql_keeps_the_counter(database: str) -> None:
    users = [new_user() for _ in range(5)]
    engine = create_engine(database)
    try:
        await _migrate(database, "head")
        ours = Notification.user_id.in_(users)
        statements = [
            insert(Notification).values(_rows(users, read_every=4, cancel_every=3)),
            # The workers' kind of update: a status that stays counted.
            update(Notification).where(ours).values(status="dispatching", lease_owner="w"),
            update(Notification).where(ours).values(status="delivered", lease_owner=None),
            # Read marks over several users at once, with a status change in the same rows.
            update(Notification)
            .where(Notification.user_id.in_(users[:2]), Notification.title.in_(["t0", "t1"]))
            .values(is_read=True),
            update(Notification)
            .where(Notification.user_id == users[1])
            .values(
                is_read=case((Notification.title == "t6", True), else_=False),
                status=case((Notification.title == "t11", "cancelled"), else_="pending"),
            ),
            update(Notification).where(Notification.user_id == users[2]).values(is_read=False),
            # Moved to another user, once unchanged otherwise, once read at the same time.
            update(Notification)
            .where(Notification.user_id == users[3], Notification.title == "t3")
            .values(user_id=users[4]),
            update(Notification)
            .where(Notification.user_id == users[3], Notification.title == "t8")
            .values(user_id=users[0], is_read=True),
            delete(Notification).where(
                Notification.user_id.in_(users[3:]), Notification.is_read.is_(False)
            ),
            delete(Notification).where(Notification.user_id == users[0]),
        ]
        for statement in statements:
            async with engine.begin() as connection:
                await connection.execute(statement)
                assert await drift(connection) == {}, statement
        async with engine.connect() as connection:  # a rollback takes its counts with it
            await connection.execute(update(Notification).where(ours).values(is_read=True))
            await connection.rollback()
            assert await drift(connection) == {}
            assert await _scalar(connection, select(func.count()).where(ours, *COUNTED)) > 0
    finally:
        await engine.dispose()


@pytest.fixture
async def fresh_pg() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own, at head: these tests TRUNCATE."""
    url = await create_pg_database("notifier_unread_counter")
    try:
        await _migrate(url, "head")
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
            await connection.execute(insert(Notification), _rows([user, other]))
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
            rows = [{**r, "id": uuid.uuid4(), "send_at": None} for r in _rows([user]) * 400]
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
