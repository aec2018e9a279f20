"""``Notification``'s factories and read mark, and the notification status derived from its
channels' states."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notifier.lifecycle.machine import derive_status
from notifier.models import Notification
from notifier.models.notification import NotificationStatus
from tests.models.builders import NOW


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
