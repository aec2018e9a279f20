"""Helpers shared by the API tests: unique ids, payloads, and direct looks at the database."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from notifier.models import Notification, PushSubscription, Recipient, TaskLog, TaskProgress
from tests.support.service import RunningService


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:12]}"


def new_task_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def notification_body(user_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user_id, "title": "Hello", "message": "World"}
    body.update(fields)
    return body


async def count(service: RunningService, *where: ColumnElement[bool], model: Any) -> int:
    async with service.context.sessions() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(query)).scalar_one())


async def notifications_of(service: RunningService, user_id: str) -> int:
    return await count(service, Notification.user_id == user_id, model=Notification)


async def notifications_for_task(service: RunningService, task_id: str) -> list[Notification]:
    async with service.context.sessions() as session:
        query = (
            select(Notification)
            .where(Notification.related_task_id == task_id)
            .order_by(Notification.created_at)
        )
        return list((await session.execute(query)).scalars())


async def tasks_named(service: RunningService, task_id: str) -> int:
    return await count(service, TaskProgress.task_id == task_id, model=TaskProgress)


async def logs_of(service: RunningService, task_id: str) -> int:
    return await count(service, TaskLog.task_id == task_id, model=TaskLog)


async def recipients_of(service: RunningService, user_id: str) -> int:
    return await count(service, Recipient.user_id == user_id, model=Recipient)


async def subscriptions_of(service: RunningService, user_id: str) -> int:
    return await count(service, PushSubscription.user_id == user_id, model=PushSubscription)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The JSON error envelope with ``status``; returns its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def error_locations(error: dict[str, Any]) -> list[list[Any]]:
    details = error.get("details") or []
    return [list(d.get("loc", [])) for d in details if isinstance(d, dict)]


async def create_task(
    client: httpx.AsyncClient, user_id: str, task_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task_id": task_id or new_task_id(),
        "user_id": user_id,
        "task_type": "export",
    }
    body.update(fields)
    response = await client.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())
