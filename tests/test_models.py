"""The task-progress models of the seed write-up: their properties and factories without a
database, and their column types (UTC timestamps, JSON) on both databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.lifecycle.machine import derive_status
from notifier.models import (
    Notification,
    ProgressMetric,
    TaskLog,
    TaskProgress,
)
from notifier.models.log import LogLevel
from notifier.models.notification import NotificationStatus
from notifier.models.task import TaskStatus
from notifier.storage.db import create_engine, create_session_factory

NOW = datetime(2030, 5, 17, 12, 0, 0, tzinfo=UTC)


def task(**fields: object) -> TaskProgress:
    values: dict[str, object] = {
        "task_id": f"t-{uuid.uuid4().hex[:8]}",
        "user_id": "u-1",
        "task_type": "export",
        "progress": 0.0,
        "status": TaskStatus.PENDING.value,
        "created_at": NOW - timedelta(minutes=5),
        "updated_at": NOW - timedelta(minutes=5),
        "task_metadata": {},
        "tags": [],
    }
    values.update(fields)
    return TaskProgress(**values)


# --- TaskProgress ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(TaskStatus))
def test_task_status_properties(status: TaskStatus) -> None:
    t = task(status=status.value)
    flags = {
        TaskStatus.PENDING: t.is_pending,
        TaskStatus.RUNNING: t.is_running,
        TaskStatus.COMPLETED: t.is_completed,
        TaskStatus.FAILED: t.is_failed,
        TaskStatus.PAUSED: t.is_paused,
        TaskStatus.CANCELLED: t.is_cancelled,
    }
    assert [s for s, on in flags.items() if on] == [status]
    finished = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    assert t.is_finished is (status in finished)


def test_update_progress_starts_a_pending_task() -> None:
    t = task()
    t.update_progress(10, current_step="download", now=NOW)
    assert t.progress == 10
    assert t.status == TaskStatus.RUNNING
    assert t.current_step == "download"
    assert t.started_at == NOW
    assert t.completed_at is None
    assert t.updated_at == NOW
    later = NOW + timedelta(seconds=30)
    t.update_progress(50, now=later)
    assert t.started_at == NOW  # the first report started it; later ones keep that
    assert t.current_step == "download"
    assert t.updated_at == later


def test_update_progress_to_a_terminal_status_sets_completed_at() -> None:
    t = task()
    t.update_progress(20, now=NOW)
    done = NOW + timedelta(seconds=40)
    t.update_progress(100, status=TaskStatus.COMPLETED, now=done)
    assert t.is_completed and t.is_finished
    assert t.completed_at == done
    assert t.duration_seconds == 40.0


def test_update_progress_uses_the_current_time_by_default() -> None:
    t = task()
    before = datetime.now(UTC)
    t.update_progress(5)
    assert t.started_at is not None and before <= t.started_at <= datetime.now(UTC)


@pytest.mark.parametrize("progress", [-1, -0.01, 100.01, 101])
def test_update_progress_refuses_values_outside_0_to_100(progress: float) -> None:
    t = task(progress=30.0, status=TaskStatus.RUNNING.value, started_at=NOW)
    with pytest.raises(ValueError, match="between 0 and 100"):
        t.update_progress(progress, now=NOW)
    assert t.progress == 30.0 and t.status == TaskStatus.RUNNING


@pytest.mark.parametrize("progress", [0, 100])
def test_update_progress_accepts_the_bounds(progress: float) -> None:
    t = task()
    t.update_progress(progress, now=NOW)
    assert t.progress == progress


def test_duration_seconds() -> None:
    assert task().duration_seconds is None
    running = task(status="running", started_at=NOW - timedelta(seconds=30))
    assert running.duration_seconds_at(NOW) == 30.0
    live = task(status="running", started_at=datetime.now(UTC) - timedelta(seconds=30))
    assert live.duration_seconds is not None and 30.0 <= live.duration_seconds < 90.0
    finished = task(status="completed", started_at=NOW, completed_at=NOW + timedelta(seconds=12.5))
    assert finished.duration_seconds == 12.5
    assert finished.duration_seconds_at(NOW + timedelta(days=1)) == 12.5


def test_estimated_remaining_seconds() -> None:
    assert task().estimated_remaining_seconds is None
    assert task(estimated_duration=100).estimated_remaining_seconds == 100.0
    started = NOW - timedelta(seconds=30)
    # From the observed rate: 30 s for 25% → 90 s for the other 75%.
    quarter = task(status="running", started_at=started, progress=25.0, estimated_duration=999)
    assert quarter.estimated_remaining_seconds_at(NOW) == pytest.approx(90.0)
    # No progress yet: the estimate minus the time spent.
    no_progress = task(status="running", started_at=started, estimated_duration=100)
    assert no_progress.estimated_remaining_seconds_at(NOW) == pytest.approx(70.0)
    overdue = task(status="running", started_at=started, estimated_duration=10)
    assert overdue.estimated_remaining_seconds_at(NOW) == 0.0
    assert task(status="running", started_at=started).estimated_remaining_seconds_at(NOW) is None
    for status in ("completed", "failed", "cancelled"):
        finished = task(status=status, started_at=started, completed_at=NOW, progress=40.0)
        assert finished.estimated_remaining_seconds == 0.0


@pytest.mark.parametrize(
    ("progress", "percentage"),
    [(0.0, 0.0), (33.33333, 33.33), (99.999, 100.0), (100.0, 100.0), (None, 0.0)],
)
def test_progress_percentage(progress: float | None, percentage: float) -> None:
    assert task(progress=progress).progress_percentage == percentage


def test_task_to_dict_carries_the_derived_figures() -> None:
    started = datetime.now(UTC) - timedelta(seconds=10)
    t = task(status="running", started_at=started, progress=50.0)
    data = t.to_dict()
    assert data["progress_percentage"] == 50.0
    assert data["duration_seconds"] >= 10.0
    assert data["estimated_remaining_seconds"] >= 10.0
    assert data["started_at"] == started.isoformat()
    assert data["completed_at"] is None


# --- TaskLog ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "level"),
    [
        (TaskLog.create_debug_log, LogLevel.DEBUG),
        (TaskLog.create_info_log, LogLevel.INFO),
        (TaskLog.create_warning_log, LogLevel.WARNING),
        (TaskLog.create_error_log, LogLevel.ERROR),
        (TaskLog.create_critical_log, LogLevel.CRITICAL),
    ],
)
def test_log_factories(factory: object, level: LogLevel) -> None:
    before = datetime.now(UTC)
    log = factory("t-1", "something happened")  # type: ignore[operator]
    assert isinstance(log, TaskLog)
    assert log.task_id == "t-1" and log.message == "something happened"
    assert log.level == level
    assert isinstance(log.id, uuid.UUID)
    assert before <= log.timestamp <= datetime.now(UTC)
    assert log.context == {} and log.attachments == [] and log.stack_trace is None
    assert log.is_error is (level in (LogLevel.ERROR, LogLevel.CRITICAL))
    assert log.is_critical is (level == LogLevel.CRITICAL)
    assert log.is_warning_or_above is (
        level in (LogLevel.WARNING, LogLevel.ERROR, LogLevel.CRITICAL)
    )


def test_log_factory_keeps_context_and_stack_trace() -> None:
    log = TaskLog.create_error_log(
        "t-1",
        "boom",
        source="loader",
        context={"row": 7},
        stack_trace="Traceback (most recent call last): ...",
        attachments=[{"name": "dump.txt"}],
    )
    data = log.to_dict()
    assert data["level"] == "ERROR"
    assert data["source"] == "loader"
    assert data["context"] == {"row": 7}
    assert data["stack_trace"].startswith("Traceback")
    assert data["attachments"] == [{"name": "dump.txt"}]
    assert data["id"] == str(log.id)


# --- Notification ----------------------------------------------------------------------------


def test_success_notification() -> None:
    n = Notification.create_success_notification("u-1", "Done", "Export finished")
    assert n.notification_type == "success"
    assert n.priority == "normal"
    assert n.channels == ["websocket"]
    assert n.status == NotificationStatus.PENDING
    assert n.retry_count == 0 and n.is_read is False
    assert n.delivery_status["websocket"]["status"] == "pending"
    assert n.delivery_status["websocket"]["attempts"] == 0
    data = n.to_dict()
    assert data["title"] == "Done" and data["message"] == "Export finished"
    assert data["metadata"] == {}


def test_error_notification_is_high_priority_unless_told() -> None:
    n = Notification.create_error_notification(
        "u-1", "Failed", "disk full", channels=["email", "websocket", "email"]
    )
    assert n.notification_type == "error" and n.priority == "high"
    assert n.channels == ["email", "websocket"]  # repeats collapse, order kept
    assert sorted(n.delivery_status) == ["email", "websocket"]
    urgent = Notification.create_error_notification("u-1", "Failed", "x", priority="urgent")
    assert urgent.priority == "urgent" and urgent.priority_rank == 0


def test_progress_notification() -> None:
    n = Notification.create_progress_notification("u-1", "t-9", 42.4)
    assert n.notification_type == "progress"
    assert n.priority == "low"
    assert n.related_task_id == "t-9"
    assert n.channels == ["websocket"]
    assert "42%" in n.message and "t-9" in n.message


def test_scheduled_notification_is_due_at_send_at() -> None:
    later = NOW + timedelta(hours=1)
    n = Notification.build(user_id="u", title="t", message="m", send_at=later, now=NOW)
    assert n.next_attempt_at == later
    assert Notification.build(user_id="u", title="t", message="m", now=NOW).next_attempt_at == NOW


def test_unknown_channel_is_refused_by_the_factory() -> None:
    with pytest.raises(ValueError):
        Notification.build(user_id="u", title="t", message="m", channels=["pigeon"])


def test_mark_read_keeps_the_first_time() -> None:
    n = Notification.create_success_notification("u-1", "Done", "x")
    n.mark_read(NOW)
    n.mark_read(NOW + timedelta(hours=1))
    assert n.is_read and n.read_at == NOW


S = NotificationStatus


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        (["pending"], S.PENDING),
        (["pending", "pending"], S.PENDING),
        (["pending", "delivered"], S.PENDING),
        (["retrying"], S.RETRYING),
        (["retrying", "delivered"], S.RETRYING),
        (["retrying", "pending"], S.RETRYING),
        (["retrying", "failed"], S.RETRYING),
        (["sent"], S.DELIVERED),
        (["delivered"], S.DELIVERED),
        # Nothing went out: not to be read as delivered.
        (["skipped"], S.SKIPPED),
        (["skipped", "skipped"], S.SKIPPED),
        (["sent", "delivered", "skipped"], S.DELIVERED),
        (["sent", "skipped"], S.DELIVERED),
        (["failed", "delivered"], S.PARTIALLY_FAILED),
        (["failed", "sent"], S.PARTIALLY_FAILED),
        (["failed", "skipped", "delivered"], S.PARTIALLY_FAILED),
        (["failed"], S.FAILED),
        (["failed", "failed"], S.FAILED),
        (["failed", "skipped"], S.FAILED),
        (["failed", "cancelled"], S.FAILED),
        (["failed", "expired"], S.FAILED),
        (["cancelled"], S.CANCELLED),
        (["cancelled", "skipped"], S.CANCELLED),
        (["expired"], S.EXPIRED),
        (["expired", "cancelled"], S.EXPIRED),
        (["delivered", "cancelled"], S.DELIVERED),
        (["sent", "expired"], S.DELIVERED),
    ],
)
def test_derive_status(channels: list[str], expected: NotificationStatus) -> None:
    assert derive_status(channels) == expected
    assert derive_status(reversed(channels)) == expected


def test_derive_status_refuses_unknown_states() -> None:
    with pytest.raises(ValueError):
        derive_status(["lost"])


# --- ProgressMetric --------------------------------------------------------------------------


def test_response_time_metric_and_unit_conversion() -> None:
    m = ProgressMetric.create_response_time_metric("api_latency", 1500, labels={"route": "/x"})
    assert m.metric_name == "api_latency" and m.unit == "ms" and m.value == 1500.0
    assert m.labels == {"route": "/x"}
    assert m.value_in("ms") == 1500.0
    assert m.value_in("seconds") == pytest.approx(1.5)
    assert m.value_in("s") == pytest.approx(1.5)
    assert m.value_in("minutes") == pytest.approx(0.025)
    minutes = ProgressMetric.create("build_time", 2, "minutes")
    assert minutes.value_in("seconds") == 120.0
    assert minutes.value_in("ms") == 120_000.0


def test_value_in_refuses_non_time_units() -> None:
    m = ProgressMetric.create_percentage_metric("cpu", 50)
    with pytest.raises(ValueError):
        m.value_in("seconds")
    with pytest.raises(ValueError):
        ProgressMetric.create_response_time_metric("x", 1).value_in("hours")


def test_percentage_metric_bounds() -> None:
    assert ProgressMetric.create_percentage_metric("cpu", 0).value == 0.0
    assert ProgressMetric.create_percentage_metric("cpu", 100).unit == "percent"
    for bad in (101, -1, 100.5):
        with pytest.raises(ValueError):
            ProgressMetric.create_percentage_metric("cpu", bad)


def test_other_metric_factories() -> None:
    throughput = ProgressMetric.create_throughput_metric("sent", 12.5)
    assert throughput.unit == "per_second" and throughput.value == 12.5
    sockets = ProgressMetric.create_websocket_connection_metric(7)
    assert sockets.metric_name == "websocket_connections"
    assert sockets.unit == "count" and sockets.value == 7.0
    progress = ProgressMetric.create_task_progress_metric("t-1", 40)
    assert progress.related_task_id == "t-1" and progress.unit == "percent"
    rate = ProgressMetric.create_error_rate_metric("errors", 5, 20)
    assert rate.value == 25.0 and rate.unit == "percent"
    assert ProgressMetric.create_error_rate_metric("errors", 0, 0).value == 0.0
    rate.add_label("env", "test")
    rate.add_label("region", "eu")
    assert rate.labels == {"env": "test", "region": "eu"}
    data = rate.to_dict()
    assert data["metric_name"] == "errors" and data["is_aggregated"] is False
    assert datetime.fromisoformat(data["timestamp"]).tzinfo is not None


# --- column types on both databases ----------------------------------------------------------


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
