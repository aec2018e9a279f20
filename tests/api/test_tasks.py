"""Tasks and task logs, and the notifications their events trigger."""

from __future__ import annotations

from datetime import UTC, datetime

from notifier.models import Notification
from tests.api.helpers import (
    assert_error,
    create_task,
    logs_of,
    new_task_id,
    new_user,
    notifications_for_task,
    tasks_named,
)
from tests.support.service import RunningService


def _of_type(rows: list[Notification], kind: str) -> list[Notification]:
    return [n for n in rows if n.notification_type == kind]


async def test_create_task_then_retry_then_conflict(service: RunningService) -> None:
    user, other, task_id = new_user(), new_user(), new_task_id()
    body = {
        "task_id": task_id,
        "user_id": user,
        "task_type": "export",
        "total_steps": 4,
        "estimated_duration": 120,
        "tags": ["nightly"],
        "task_metadata": {"source": "test"},
    }
    async with service.client() as client:
        created = await client.post("/v1/tasks", json=body)
        again = await client.post("/v1/tasks", json=body)
        stolen = await client.post("/v1/tasks", json={**body, "user_id": other})
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["task_id"] == task_id and task["user_id"] == user
    assert task["status"] == "pending"
    assert task["progress"] == 0 and task["progress_percentage"] == 0
    assert task["total_steps"] == 4 and task["estimated_duration"] == 120
    assert task["tags"] == ["nightly"] and task["task_metadata"] == {"source": "test"}
    assert task["started_at"] is None and task["duration_seconds"] is None
    assert task["estimated_remaining_seconds"] == 120
    assert again.status_code == 200, again.text
    assert again.json()["id"] == task["id"]
    assert_error(stolen, 409, "conflict")
    assert await tasks_named(service, task_id) == 1
    async with service.client() as client:
        stored = (await client.get(f"/v1/tasks/{task_id}")).json()
    assert stored["user_id"] == user


async def test_bad_task_create_is_422_and_writes_nothing(service: RunningService) -> None:
    task_id = new_task_id()
    async with service.client() as client:
        response = await client.post(
            "/v1/tasks",
            json={"task_id": task_id, "user_id": new_user(), "task_type": "x", "total_steps": 0},
        )
    error = assert_error(response, 422, "validation_error")
    assert "total_steps" in error["message"]
    assert await tasks_named(service, task_id) == 0


async def test_progress_starts_the_task(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user, estimated_duration=100)
        path = f"/v1/tasks/{task['task_id']}"
        patched = await client.patch(path, json={"progress": 25, "current_step": "step 1"})
        read = await client.get(path)
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["status"] == "running"
    assert body["progress"] == 25 and body["progress_percentage"] == 25
    assert body["current_step"] == "step 1"
    started = datetime.fromisoformat(body["started_at"])
    assert abs((datetime.now(UTC) - started).total_seconds()) < 60
    assert read.status_code == 200
    fetched = read.json()
    assert fetched["status"] == "running"
    assert fetched["started_at"] == body["started_at"]
    assert isinstance(fetched["duration_seconds"], float) and fetched["duration_seconds"] >= 0
    # Extrapolated from the rate so far: three times the elapsed time remains at 25%.
    remaining = fetched["estimated_remaining_seconds"]
    assert isinstance(remaining, float)
    assert remaining >= 0
    assert remaining <= 3 * fetched["duration_seconds"] + 1


async def test_owner_reads_the_task_with_its_token(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
    async with service.client(await service.user_token(user)) as owner:
        response = await owner.get(f"/v1/tasks/{task['task_id']}")
    assert response.status_code == 200, response.text
    assert response.json()["task_id"] == task["task_id"]


async def test_unknown_task_is_404(service: RunningService) -> None:
    task_id = new_task_id()
    async with service.client() as client:
        responses = [
            await client.get(f"/v1/tasks/{task_id}"),
            await client.patch(f"/v1/tasks/{task_id}", json={"progress": 5}),
            await client.post(f"/v1/tasks/{task_id}/logs", json={"message": "x"}),
            await client.get(f"/v1/tasks/{task_id}/logs"),
        ]
    for response in responses:
        assert_error(response, 404, "not_found")
    assert await logs_of(service, task_id) == 0
    assert await notifications_for_task(service, task_id) == []


async def test_completed_creates_one_success_notification(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
        path = f"/v1/tasks/{task['task_id']}"
        running = await client.patch(path, json={"status": "running"})
        done = await client.patch(path, json={"status": "completed", "result": {"rows": 3}})
        done_again = await client.patch(path, json={"status": "completed"})
        inbox = (await client.get(f"/v1/users/{user}/notifications")).json()
    assert running.status_code == 200, running.text
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "completed"
    assert body["progress"] == 100 and body["progress_percentage"] == 100
    assert body["completed_at"] is not None
    assert body["result"] == {"rows": 3}
    assert body["estimated_remaining_seconds"] == 0
    assert done_again.status_code == 200, done_again.text
    success = _of_type(await notifications_for_task(service, task["task_id"]), "success")
    assert len(success) == 1
    assert success[0].user_id == user
    assert [n["notification_type"] for n in inbox["items"] if n["related_task_id"]] == ["success"]


async def test_illegal_transition_is_409_and_notifies_nobody(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
        path = f"/v1/tasks/{task['task_id']}"
        assert (await client.patch(path, json={"status": "completed"})).status_code == 200
        before = await notifications_for_task(service, task["task_id"])
        response = await client.patch(path, json={"status": "running", "progress": 10})
        after_read = (await client.get(path)).json()
    error = assert_error(response, 409, "conflict")
    assert error["details"]["allowed"] == []
    assert error["details"]["current"] == "completed"
    assert error["details"]["requested"] == "running"
    after = await notifications_for_task(service, task["task_id"])
    assert [n.id for n in after] == [n.id for n in before]
    assert after_read["status"] == "completed" and after_read["progress"] == 100


async def test_illegal_transition_lists_the_allowed_ones(service: RunningService) -> None:
    async with service.client() as client:
        task = await create_task(client, new_user())
        path = f"/v1/tasks/{task['task_id']}"
        await client.patch(path, json={"status": "running"})
        await client.patch(path, json={"status": "paused"})
        response = await client.patch(path, json={"status": "completed"})
    error = assert_error(response, 409, "conflict")
    assert sorted(error["details"]["allowed"]) == ["cancelled", "failed", "running"]


async def test_failed_creates_a_high_priority_error_notification(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
        path = f"/v1/tasks/{task['task_id']}"
        response = await client.patch(
            path,
            json={
                "status": "failed",
                "error_message": "disk full on /var/export",
                "error_details": {"errno": 28},
            },
        )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "failed"
    assert response.json()["error_message"] == "disk full on /var/export"
    errors = _of_type(await notifications_for_task(service, task["task_id"]), "error")
    assert len(errors) == 1
    assert errors[0].priority == "high"
    # The built-in task.failed template's text (tests/templates/test_trigger_templates.py).
    assert errors[0].message == f"Task {task['task_id']} failed: disk full on /var/export"
    assert errors[0].user_id == user


async def test_logs_trigger_by_level(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
        path = f"/v1/tasks/{task['task_id']}/logs"
        info = await client.post(path, json={"level": "INFO", "message": "all good"})
        warning = await client.post(path, json={"level": "WARNING", "message": "slow"})
        after_info = await notifications_for_task(service, task["task_id"])
        error = await client.post(
            path,
            json={
                "level": "ERROR",
                "message": "row 7 rejected",
                "source": "loader",
                "context": {"row": 7},
                "stack_trace": "Traceback ...",
            },
        )
        critical = await client.post(path, json={"level": "CRITICAL", "message": "db lost"})
    for response in (info, warning, error, critical):
        assert response.status_code == 201, response.text
    assert error.json()["level"] == "ERROR"
    assert error.json()["source"] == "loader"
    assert error.json()["context"] == {"row": 7}
    assert after_info == []
    triggered = await notifications_for_task(service, task["task_id"])
    assert [(n.notification_type, n.priority, n.message) for n in triggered] == [
        ("error", "high", f"Task {task['task_id']} logged an error in loader: row 7 rejected"),
        ("error", "urgent", f"Task {task['task_id']} logged a critical error: db lost"),
    ]
    assert all(n.user_id == user for n in triggered)
    assert await logs_of(service, task["task_id"]) == 4


async def test_a_retried_error_log_with_its_key_is_stored_and_notified_once(
    service: RunningService,
) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
        path = f"/v1/tasks/{task['task_id']}/logs"
        body = {"level": "ERROR", "message": "row 9 rejected"}
        headers = {"Idempotency-Key": f"log-{task['task_id']}"}
        first = await client.post(path, json=body, headers=headers)
        again = await client.post(path, json=body, headers=headers)
        other = await client.post(path, json={**body, "message": "other"}, headers=headers)
    assert first.status_code == 201, first.text
    assert again.status_code == 200 and again.json() == first.json()
    assert_error(other, 409, "conflict")
    assert await logs_of(service, task["task_id"]) == 1
    triggered = await notifications_for_task(service, task["task_id"])
    assert [n.message for n in triggered] == [
        f"Task {task['task_id']} logged an error: row 9 rejected"
    ]


async def test_logs_oldest_first_with_level_filter_and_cursor(service: RunningService) -> None:
    user = new_user()
    levels = ["DEBUG", "INFO", "ERROR", "WARNING", "CRITICAL", "INFO", "ERROR"]
    async with service.client() as client:
        task = await create_task(client, user)
        path = f"/v1/tasks/{task['task_id']}/logs"
        ids = []
        for i, level in enumerate(levels):
            r = await client.post(path, json={"level": level, "message": f"m{i}"})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])

        everything = await client.get(path)
        errors = await client.get(path, params={"level": "ERROR"})
        warnings = await client.get(path, params={"level": "WARNING"})

        paged: list[str] = []
        cursor = None
        for _ in range(len(levels)):
            params: dict[str, object] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = await client.get(path, params=params)
            assert page.status_code == 200, page.text
            paged.extend(item["id"] for item in page.json()["items"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        bad_cursor = await client.get(path, params={"cursor": "not-a-cursor"})
        bad_level = await client.get(path, params={"level": "LOUD"})

    assert everything.status_code == 200, everything.text
    assert [i["id"] for i in everything.json()["items"]] == ids
    assert everything.json()["next_cursor"] is None
    assert [i["message"] for i in errors.json()["items"]] == ["m2", "m4", "m6"]
    assert [i["level"] for i in errors.json()["items"]] == ["ERROR", "CRITICAL", "ERROR"]
    assert [i["level"] for i in warnings.json()["items"]] == [
        "ERROR",
        "WARNING",
        "CRITICAL",
        "ERROR",
    ]
    assert paged == ids
    assert_error(bad_cursor, 422, "validation_error")
    assert_error(bad_level, 422, "validation_error")


async def test_task_metadata_overrides_trigger_channels(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(
            client, user, task_metadata={"notify": {"on_completed": ["email", "websocket"]}}
        )
        await client.patch(f"/v1/tasks/{task['task_id']}", json={"status": "completed"})
    success = _of_type(await notifications_for_task(service, task["task_id"]), "success")
    assert len(success) == 1
    assert success[0].channels == ["email", "websocket"]
