"""``TaskProgress`` without a database: status flags, progress updates, durations and estimates,
its dict form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notifier.models.task import TaskStatus
from tests.models.builders import NOW, task


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
