"""Every identifier at the longest the API accepts, through every task endpoint (hardening issue,
item 4): what the API validates must fit every column it ends up in, the notification dedupe
keys the triggers derive from it included. SQLite does not enforce VARCHAR lengths; PostgreSQL
does, so the PostgreSQL run is the one that can fail here."""

from __future__ import annotations

import uuid

from notifier.models import Notification
from tests.api.helpers import notifications_for_task
from tests.support.service import RunningService


def _longest(prefix: str, length: int) -> str:
    """A unique id of exactly ``length`` characters, some of them outside ASCII (a column's
    limit counts characters, and a multi-byte character must not count as more than one)."""
    head = f"{prefix}-é-{uuid.uuid4().hex}-"
    return head + "x" * (length - len(head))


async def test_the_longest_ids_go_through_a_whole_task_life(service: RunningService) -> None:
    user_id = _longest("user", 255)
    task_type = _longest("type", 100)
    done_id, failing_id = _longest("done", 255), _longest("fail", 255)
    source = _longest("source", 255)
    tags = [_longest(f"tag{i}", 64) for i in range(50)]
    async with service.client() as client:
        for task_id in (done_id, failing_id):
            created = await client.post(
                "/v1/tasks",
                json={
                    "task_id": task_id,
                    "user_id": user_id,
                    "task_type": task_type,
                    "tags": tags,
                    "total_steps": 2,
                },
            )
            assert created.status_code == 201, created.text
            progress = await client.patch(
                f"/v1/tasks/{task_id}", json={"progress": 40, "current_step": "s" * 500}
            )
            assert progress.status_code == 200, progress.text
            for level in ("ERROR", "CRITICAL"):
                logged = await client.post(
                    f"/v1/tasks/{task_id}/logs",
                    json={"level": level, "message": "m" * 10_000, "source": source},
                    headers={"Idempotency-Key": "k" * 200 + uuid.uuid4().hex + "k" * 23},
                )
                assert logged.status_code == 201, logged.text

        completed = await client.patch(f"/v1/tasks/{done_id}", json={"status": "completed"})
        failed = await client.patch(
            f"/v1/tasks/{failing_id}",
            json={"status": "failed", "error_message": "e" * 10_000},
        )
        restarted = await client.patch(f"/v1/tasks/{failing_id}", json={"status": "running"})
        failed_again = await client.patch(f"/v1/tasks/{failing_id}", json={"status": "failed"})
        logs = await client.get(f"/v1/tasks/{done_id}/logs", params={"level": "ERROR"})
        read = await client.get(f"/v1/tasks/{failing_id}")
        listed = await client.get(f"/v1/users/{user_id}/tasks")
        inbox = await client.get(f"/v1/users/{user_id}/notifications", params={"limit": 100})

    for response in (completed, failed, restarted, failed_again, logs, read, listed, inbox):
        assert response.status_code == 200, response.text
    assert completed.json()["status"] == "completed"
    assert read.json()["status"] == "failed" and read.json()["task_id"] == failing_id
    assert [log["source"] for log in logs.json()["items"]] == [source, source]
    assert {task["task_id"] for task in listed.json()} == {done_id, failing_id}

    def kinds(rows: list[Notification]) -> list[str]:
        return sorted(n.notification_type for n in rows)

    done_rows = await notifications_for_task(service, done_id)
    failing_rows = await notifications_for_task(service, failing_id)
    assert kinds(done_rows) == ["error", "error", "progress", "success"]
    # Each run of the restarted task failed once, and each failure notified once.
    assert kinds(failing_rows) == ["error", "error", "error", "error", "progress"]
    assert {item["related_task_id"] for item in inbox.json()["items"]} == {done_id, failing_id}
