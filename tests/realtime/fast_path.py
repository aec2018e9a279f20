"""What the websocket fast path's tests (test_fast_path*.py) share: a short grace, an enqueue
through the API, and the rows it leaves."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from notifier.models.notification import Notification, NotificationDelivery
from tests.support.service import RunningService

GRACE = 1.0  # seconds: short, so that the republish tests wait for it, not for the default 5


async def enqueue(service: RunningService, path: str, body: dict[str, Any]) -> Any:
    async with service.client() as client:
        response = await client.post(path, json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def websocket_channel(service: RunningService, notification_id: str) -> NotificationDelivery:
    async with service.context.sessions() as session:
        row = await session.scalar(
            select(NotificationDelivery).where(
                NotificationDelivery.notification_id == uuid.UUID(notification_id),
                NotificationDelivery.channel == "websocket",
            )
        )
    assert row is not None
    return row


async def next_attempt_at(service: RunningService, notification_id: str) -> Any:
    async with service.context.sessions() as session:
        return await session.scalar(
            select(Notification.next_attempt_at).where(
                Notification.id == uuid.UUID(notification_id)
            )
        )
