"""A task whose live frame is larger than PostgreSQL's NOTIFY payload (8000 bytes) can still be
updated, and its owner's socket gets the whole frame.

Reproduced on 02f835d: a task created with 8 KB of ``task_metadata``, or failed with a
9,000-character ``error_message``, made ``PATCH /v1/tasks/{id}`` answer 500 ("realtime frame too
large for NOTIFY"), so it could never be updated again and its failure notification was never
created. Every field was within its documented limit. Runs on each broker (``fanout_service``):
with NOTIFY the frame travels by reference (the listener reads the task row), with NATS whole
after the commit, on SQLite straight to the hub.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import websockets

from tests.realtime.sockets import listening, next_frame, ws_url
from tests.support.service import RunningService

BIG_METADATA = {"notes": "m" * 8000}
LONG_ERROR = "e" * 9000


@contextlib.asynccontextmanager
async def task_owner(
    service: RunningService,
) -> AsyncIterator[tuple[str, str, websockets.ClientConnection, httpx.AsyncClient]]:
    """A fresh user with an open socket, a task id for them, and a producer's client."""
    await listening(service)
    user, task_id = f"big-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    token = await service.user_token(user)
    async with websockets.connect(ws_url(service, token)) as socket, service.client() as client:
        yield user, task_id, socket, client


async def fail_with_long_error(
    user: str, task_id: str, socket: websockets.ClientConnection, client: httpx.AsyncClient
) -> dict[str, Any]:
    """Fail the task with a 9,000-character message: answered 200, the socket gets the whole
    frame, and the failure notification was created with the update."""
    failed = await client.patch(
        f"/v1/tasks/{task_id}", json={"status": "failed", "error_message": LONG_ERROR}
    )
    assert failed.status_code == 200, failed.text
    frame = await next_frame(socket, "task_progress")
    assert frame["task"]["status"] == "failed"
    assert frame["task"]["error_message"] == LONG_ERROR
    inbox = (await client.get(f"/v1/users/{user}/notifications")).json()
    assert [n["notification_type"] for n in inbox["items"]] == ["error"]
    return frame


async def test_a_task_with_large_fields_is_updated_and_streamed_whole(
    fanout_service: RunningService,
) -> None:
    async with task_owner(fanout_service) as (user, task_id, socket, client):
        created = await client.post(
            "/v1/tasks",
            json={
                "task_id": task_id,
                "user_id": user,
                "task_type": "import",
                "task_metadata": BIG_METADATA,
            },
        )
        assert created.status_code == 201, created.text

        running = await client.patch(f"/v1/tasks/{task_id}", json={"status": "running"})
        assert running.status_code == 200, running.text
        frame = await next_frame(socket, "task_progress")
        assert frame["task"]["task_id"] == task_id
        assert frame["task"]["status"] == "running"
        assert frame["task"]["task_metadata"] == BIG_METADATA

        frame = await fail_with_long_error(user, task_id, socket, client)
        assert frame["task"]["task_metadata"] == BIG_METADATA


async def test_a_failure_with_a_long_error_message_is_recorded_and_streamed(
    fanout_service: RunningService,
) -> None:
    async with task_owner(fanout_service) as (user, task_id, socket, client):
        body = {"task_id": task_id, "user_id": user, "task_type": "export"}
        assert (await client.post("/v1/tasks", json=body)).status_code == 201
        assert (
            await client.patch(f"/v1/tasks/{task_id}", json={"status": "running"})
        ).status_code == 200
        assert (await next_frame(socket, "task_progress"))["task"]["status"] == "running"
        await fail_with_long_error(user, task_id, socket, client)
