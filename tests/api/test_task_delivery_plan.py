"""``task_metadata.notify`` may set a throttle and escalation steps for one task's triggered
notifications (docs/architecture.md, "Digest, throttle and escalation"): validated when the
task is created (422, nothing stored), applied when the trigger fires."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import (
    assert_error,
    create_task,
    new_task_id,
    new_user,
    notifications_for_task,
    tasks_named,
)
from tests.support.service import RunningService

STEP = {"after_seconds": 900, "channels": ["email", "sms"], "unless": "read"}
THROTTLE = {"key": "export-failures", "limit": 5, "window_seconds": 3600}


async def test_failed_task_notification_carries_the_tasks_plan(service: RunningService) -> None:
    user = new_user()
    notify = {"on_failed": ["websocket", "sms"], "escalation": [STEP], "throttle": THROTTLE}
    async with service.client() as client:
        task = await create_task(client, user, task_metadata={"notify": notify})
        response = await client.patch(
            f"/v1/tasks/{task['task_id']}", json={"status": "failed", "error_message": "boom"}
        )
        assert response.status_code == 200, response.text
        [failed] = await notifications_for_task(service, task["task_id"])
        body = (await client.get(f"/v1/notifications/{failed.id}")).json()

    # sms is the event's own channel: the step keeps only email.
    assert failed.delivery_plan == {
        "throttle": THROTTLE,
        "escalation": [{**STEP, "channels": ["email"]}],
        # The default failure digest (NOTIFIER_DIGEST_TASK_FAILURES_SECONDS).
        "digest": {"key": "task-failures", "window_seconds": 300, "leading": True},
    }
    assert body["channels"] == ["websocket", "sms"]
    email = body["delivery_status"]["email"]
    assert email["status"] == "pending" and email["next_attempt_at"] is not None
    assert task["task_metadata"]["notify"]["escalation"] == [STEP]


BAD: list[tuple[str, dict[str, Any]]] = [
    ("throttle limit 0", {"throttle": {**THROTTLE, "limit": 0}}),
    ("step unless unknown", {"escalation": [{**STEP, "unless": "clicked"}]}),
    ("steps not increasing", {"escalation": [STEP, {**STEP, "channels": ["browser"]}]}),
    ("digest window 0", {"digest": {"key": "k", "window_seconds": 0}}),
]


@pytest.mark.parametrize("notify", [n for _, n in BAD], ids=[c for c, _ in BAD])
async def test_bad_task_plan_is_422(service: RunningService, notify: dict[str, Any]) -> None:
    task_id = new_task_id()
    async with service.client() as client:
        response = await client.post(
            "/v1/tasks",
            json={
                "task_id": task_id,
                "user_id": new_user(),
                "task_type": "export",
                "task_metadata": {"notify": notify},
            },
        )
    error = assert_error(response, 422, "validation_error")
    assert "notify." in error["message"], error
    assert await tasks_named(service, task_id) == 0
