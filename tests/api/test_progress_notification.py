"""A task's ONE progress notification (docs/architecture.md, "Triggers"; hardening issue,
newcomer items): updated in place as the task moves, marked read when it ends, reopened when it
restarts, and never two for one task, even for concurrent reports. The worker's side (its
websocket channel sent once) is in tests/test_task_flow.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import text

from notifier.models import Notification
from notifier.models.base import utcnow
from notifier.storage.tasks import get_task
from notifier.triggers.progress import track_progress
from tests.api.helpers import create_task, new_user, notifications_for_task
from tests.support.service import RunningService


async def _progress_rows(service: RunningService, task_id: str) -> list[Notification]:
    rows = await notifications_for_task(service, task_id)
    return [n for n in rows if n.notification_type == "progress"]


async def _inbox(client: httpx.AsyncClient, user: str) -> dict[str, Any]:
    response = await client.get(f"/v1/users/{user}/notifications", params={"limit": 100})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_reports_update_one_notification_that_is_read_when_the_task_ends(
    service: RunningService,
) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
        path = f"/v1/tasks/{task['task_id']}"
        for progress in (10, 40, 70):
            response = await client.patch(
                path, json={"progress": progress, "current_step": f"step at {progress}"}
            )
            assert response.status_code == 200, response.text
        running = await _inbox(client, user)
        [during] = await _progress_rows(service, task["task_id"])
        assert (await client.patch(path, json={"status": "completed"})).status_code == 200
        ended = await _inbox(client, user)
    [after] = await _progress_rows(service, task["task_id"])

    assert during.id == after.id
    assert during.notification_metadata["progress"] == 70
    assert "70%" in during.message and "step at 70" in during.message
    assert not during.is_read
    assert [n["notification_type"] for n in running["items"]] == ["progress"]
    assert running["unread_count"] == 1

    assert after.is_read and after.read_at is not None
    assert after.created_at == during.created_at  # it keeps its place in the inbox
    assert after.notification_metadata["status"] == "completed"
    assert [n["notification_type"] for n in ended["items"]] == ["success", "progress"]
    assert ended["unread_count"] == 1  # the success notification only


async def test_a_restarted_task_reopens_its_notification(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
        path = f"/v1/tasks/{task['task_id']}"
        await client.patch(path, json={"progress": 30})
        failed = await client.patch(path, json={"status": "failed", "error_message": "disk"})
        assert failed.status_code == 200, failed.text
        [closed] = await _progress_rows(service, task["task_id"])
        later = await client.post(
            "/v1/notifications", json={"user_id": user, "title": "later", "message": "x"}
        )
        assert later.status_code == 202, later.text
        restarted = await client.patch(path, json={"status": "running", "progress": 5})
        assert restarted.status_code == 200, restarted.text
        [reopened] = await _progress_rows(service, task["task_id"])
        inbox = await _inbox(client, user)
        await client.patch(path, json={"status": "failed"})
    [final] = await _progress_rows(service, task["task_id"])

    assert closed.is_read and closed.notification_metadata["status"] == "failed"
    assert reopened.id == closed.id
    assert not reopened.is_read and reopened.read_at is None
    assert reopened.notification_metadata == {
        "task_id": task["task_id"],
        "progress": 5.0,
        "status": "running",
    }
    # Newest first by creation: the reopened notification did not jump above "later".
    assert [n["title"] for n in inbox["items"]] == ["later", "export failed", "export progress"]
    assert final.id == closed.id and final.is_read


async def test_concurrent_first_reports_create_one_notification(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        tasks = [await create_task(client, user) for _ in range(3)]
        responses = await asyncio.gather(
            *(
                client.patch(f"/v1/tasks/{task['task_id']}", json={"progress": float(step)})
                for task in tasks
                for step in range(1, 9)
            )
        )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    for task in tasks:
        [row] = await _progress_rows(service, task["task_id"])
        assert row.notification_metadata["progress"] == 8.0  # progress only moves forward


async def test_no_progress_report_no_progress_notification(service: RunningService) -> None:
    async with service.client() as client:
        task = await create_task(client, new_user())
        path = f"/v1/tasks/{task['task_id']}"
        await client.patch(path, json={"status": "running"})
        await client.patch(path, json={"status": "completed"})
    assert await _progress_rows(service, task["task_id"]) == []


async def _until_a_transaction_waits_for_a_lock(service: RunningService) -> None:
    """On PostgreSQL, until another transaction waits on a lock (the second insert, on the
    unique key of the first's uncommitted row); no event tells, so this polls the server's own
    view with a deadline. SQLite's one writer lock serialises the two transactions: there the
    second waits to begin until the first commits, and there is nothing to wait for here."""
    if service.settings.is_sqlite:
        return
    deadline = asyncio.get_running_loop().time() + 10
    async with service.context.engine.connect() as connection:
        while True:
            waiting = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            if waiting:
                return
            assert asyncio.get_running_loop().time() < deadline, "the second insert never waited"
            await asyncio.sleep(0.02)  # polling pg_stat_activity: a lock wait sends no event


async def test_the_database_keeps_one_even_without_the_task_lock(service: RunningService) -> None:
    """The PATCH holds the task row's lock, which serialises reports; this goes round it (two
    transactions that do not lock the task) to show that the unique key alone keeps one row:
    the second insert waits for the first transaction, meets the key, and updates that row."""
    async with service.client() as client:
        task = await create_task(client, new_user())
    first_inserted = asyncio.Event()

    async def report(progress: float, *, first: bool) -> Notification | None:
        if not first:
            # Before its first statement: on SQLite that statement takes the one write lock
            # (BEGIN IMMEDIATE), and taken before the first report's, the two waited for each
            # other until the busy timeout ("database is locked").
            await first_inserted.wait()
        async with service.context.sessions() as session:
            row = await get_task(session, task["task_id"])
            assert row is not None
            row.status, row.progress = "running", progress
            created = await track_progress(
                session, row, progress_reported=True, restarted=False, now=utcnow()
            )
            if first:
                first_inserted.set()
                await _until_a_transaction_waits_for_a_lock(service)
            await session.commit()
            return created

    results = await asyncio.gather(report(10, first=True), report(20, first=False))
    assert [r is not None for r in results] == [True, False]
    [row] = await _progress_rows(service, task["task_id"])
    assert row.notification_metadata["progress"] == 20.0
