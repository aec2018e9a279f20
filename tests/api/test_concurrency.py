"""Retried or duplicated producer calls arriving at the same moment: one row, no 500s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.api.helpers import (
    create_task,
    new_task_id,
    new_user,
    notifications_for_task,
    recipients_of,
    subscriptions_of,
    tasks_named,
)
from tests.support.service import RunningService, make_settings, running_service

N = 10


@pytest.fixture(scope="module")
async def private_push_service(database_url: str) -> AsyncIterator[RunningService]:
    async with running_service(make_settings(database_url, push_allow_private_endpoints=True)) as s:
        yield s


async def test_concurrent_task_creates_make_one_task(service: RunningService) -> None:
    body = {"task_id": new_task_id(), "user_id": new_user(), "task_type": "export"}
    async with service.client() as client:
        responses = await asyncio.gather(*(client.post("/v1/tasks", json=body) for _ in range(N)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (N - 1) + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await tasks_named(service, body["task_id"]) == 1


async def test_concurrent_completions_notify_once(service: RunningService) -> None:
    async with service.client() as client:
        task = await create_task(client, new_user())
        path = f"/v1/tasks/{task['task_id']}"
        responses = await asyncio.gather(
            *(client.patch(path, json={"status": "completed"}) for _ in range(N))
        )
    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses]
    rows = await notifications_for_task(service, task["task_id"])
    assert [n.notification_type for n in rows] == ["success"]


async def test_concurrent_recipient_puts_make_one_row(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        responses = await asyncio.gather(
            *(
                client.put(f"/v1/users/{user}/recipient", json={"email": f"a{i}@example.com"})
                for i in range(N)
            )
        )
    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses]
    assert await recipients_of(service, user) == 1


async def test_concurrent_push_subscriptions_make_one_row(
    private_push_service: RunningService,
) -> None:
    service = private_push_service
    user = new_user()
    body = {
        "endpoint": f"http://127.0.0.1:9/push/{user}",
        "keys": {"p256dh": "B" * 87, "auth": "A" * 22},
    }
    async with service.client() as client:
        responses = await asyncio.gather(
            *(client.post(f"/v1/users/{user}/push-subscriptions", json=body) for _ in range(N))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (N - 1) + [201], [r.text for r in responses]
    assert await subscriptions_of(service, user) == 1
