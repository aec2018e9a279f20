"""The models' column types on both databases: timestamps stored and read back as UTC, naive
ones refused, JSON columns round-tripped, and the seed's indexes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.models import Notification, ProgressMetric, TaskLog, TaskProgress
from notifier.storage.db import create_engine, create_session_factory
from tests.models.builders import task


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_timestamps_round_trip_as_utc(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    plus_five_thirty = timezone(timedelta(hours=5, minutes=30))
    started = datetime(2030, 1, 2, 8, 30, 15, 123456, tzinfo=plus_five_thirty)
    t = task(status="running", started_at=started, progress=12.0)
    async with sessions() as session:
        session.add(t)
        await session.commit()
    async with sessions() as session:
        row = (
            await session.execute(select(TaskProgress).where(TaskProgress.task_id == t.task_id))
        ).scalar_one()
    assert row.started_at == started
    assert row.started_at is not None and row.started_at.utcoffset() == timedelta(0)
    assert row.started_at.isoformat() == "2030-01-02T03:00:15.123456+00:00"
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)


async def test_naive_timestamps_are_refused(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    t = task(started_at=datetime(2030, 1, 1, 12, 0))
    async with sessions() as session:
        session.add(t)
        with pytest.raises(StatementError, match="naive datetime"):
            await session.commit()
        await session.rollback()
    async with sessions() as session:
        found = await session.execute(select(TaskProgress).where(TaskProgress.task_id == t.task_id))
        assert found.scalar_one_or_none() is None


async def test_json_columns_round_trip(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    metadata = {
        "nested": {"list": [1, 2.5, None, True, "ü€😀"], "empty": {}},
        "quote": 'say "hi"\\',
    }
    n = Notification.build(
        user_id=f"u-{uuid.uuid4().hex[:8]}",
        title="t",
        message="m",
        channels=["email", "websocket"],
        metadata=metadata,
    )
    log = TaskLog.create_error_log("t-json", "x", context={"k": ["v", 1]}, attachments=[{"a": 1}])
    t = task(tags=["a", "b"], result={"rows": [1, 2]}, task_metadata={"notify": {}})
    metric = ProgressMetric.create("m", 1, "count", dimensions={"d": [1]})
    async with sessions() as session:
        session.add_all([n, log, t, metric])
        await session.commit()
    async with sessions() as session:
        got_n = await session.get(Notification, n.id)
        got_log = await session.get(TaskLog, log.id)
        got_t = await session.get(TaskProgress, t.id)
        got_metric = await session.get(ProgressMetric, metric.id)
        assert got_n is not None and got_log is not None
        assert got_t is not None and got_metric is not None
        assert got_n.notification_metadata == metadata
        assert got_n.channels == ["email", "websocket"]
        assert sorted(got_n.delivery_status) == ["email", "websocket"]
        assert got_log.context == {"k": ["v", 1]} and got_log.attachments == [{"a": 1}]
        assert got_t.tags == ["a", "b"] and got_t.result == {"rows": [1, 2]}
        assert got_t.error_details is None
        assert got_metric.dimensions == {"d": [1]}


async def test_seed_indexes_exist(engine: AsyncEngine) -> None:
    def indexes(connection: object) -> dict[str, set[str]]:
        inspector = sa_inspect(connection)
        return {
            table: {ix["name"] for ix in inspector.get_indexes(table) if ix["name"]}
            for table in ("notifications", "task_progress", "task_logs", "progress_metrics")
        }

    async with engine.connect() as connection:
        found = await connection.run_sync(indexes)
    assert {
        "idx_notifications_user_id",
        "idx_notifications_is_read",
        "idx_notifications_priority",
        "idx_notifications_user_read",
        "idx_notifications_user_priority",
    } <= found["notifications"]
    assert {
        "idx_task_progress_task_id",
        "idx_task_progress_user_id",
        "idx_task_progress_status",
        "idx_task_progress_user_status",
        "idx_task_progress_type_status",
    } <= found["task_progress"]
    assert {
        "idx_task_logs_task_id",
        "idx_task_logs_level",
        "idx_task_logs_timestamp",
        "idx_task_logs_task_timestamp",
        "idx_task_logs_level_timestamp",
    } <= found["task_logs"]
    assert {
        "idx_progress_metrics_name",
        "idx_progress_metrics_timestamp",
        "idx_progress_metrics_related_task_id",
        "idx_progress_metrics_name_timestamp",
        "idx_progress_metrics_task_timestamp",
    } <= found["progress_metrics"]
