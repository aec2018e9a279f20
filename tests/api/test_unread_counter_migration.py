"""The unread counter under straight SQL on a database of the test's own, on each database: the
migration's backfill across a downgrade and upgrade, and bulk inserts, updates and deletes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import case, delete, func, insert, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from notifier.models import Notification, UserUnreadCount
from notifier.storage.db import create_engine
from notifier.storage.notifications import unread_count
from tests.api.helpers import new_user
from tests.api.unread_counts import COUNTED, drift, migrate_to, notification_rows, scalar
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url


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


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def test_backfill_survives_a_downgrade_and_upgrade(database: str) -> None:
    users = [new_user() for _ in range(4)]
    engine = create_engine(database)
    try:
        await migrate_to(database, "0002")
        async with engine.begin() as connection:  # rows from before the counter existed
            await connection.execute(insert(Notification), notification_rows(users, read_every=3))
        await migrate_to(database, "head")
        async with engine.connect() as connection:
            assert await drift(connection) == {}
            assert await scalar(connection, select(func.count(UserUnreadCount.user_id))) == 4
        await migrate_to(database, "0002", down=True)
        assert {"user_unread_counts", "user_unread_deltas"}.isdisjoint(await _tables(engine))
        async with engine.begin() as connection:  # writes while no trigger keeps count
            await connection.execute(
                insert(Notification), notification_rows(users[:2], cancel_every=2)
            )
            await connection.execute(
                update(Notification).where(Notification.user_id == users[2]).values(is_read=True)
            )
        await migrate_to(database, "head")
        async with engine.connect() as connection:
            assert await drift(connection) == {}
            due = select(func.count()).where(
                Notification.user_id == users[3], *COUNTED, Notification.send_at.is_(None)
            )
            expected = await scalar(connection, due)
            async with AsyncSession(bind=connection) as session:
                assert await unread_count(session, users[2]) == 0
                # users[3] has the first round's scheduled row (i == 3): not in the inbox yet.
                assert await unread_count(session, users[3]) == expected
        async with engine.begin() as connection:  # and the triggers are back
            await connection.execute(insert(Notification), notification_rows(users))
            assert await drift(connection) == {}
    finally:
        await engine.dispose()


async def test_bulk_sql_keeps_the_counter(database: str) -> None:
    users = [new_user() for _ in range(5)]
    engine = create_engine(database)
    try:
        await migrate_to(database, "head")
        ours = Notification.user_id.in_(users)
        statements = [
            insert(Notification).values(notification_rows(users, read_every=4, cancel_every=3)),
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
            assert await scalar(connection, select(func.count()).where(ours, *COUNTED)) > 0
    finally:
        await engine.dispose()
