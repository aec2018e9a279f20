"""Read marks on both databases: one notification (only by its owner) or all of a user's, and
the unread count they drop."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from notifier.models import Notification
from tests.api.helpers import (
    assert_error,
    new_user,
    notification_body,
)
from tests.support.service import RunningService


async def test_mark_read_sets_read_at_and_drops_unread_count(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        first = (await client.post("/v1/notifications", json=notification_body(user))).json()
        await client.post("/v1/notifications", json=notification_body(user))
    async with service.client(await service.user_token(user)) as owner:
        before = (await owner.get(f"/v1/users/{user}/notifications")).json()
        read = await owner.post(f"/v1/users/{user}/notifications/{first['id']}/read")
        after = (await owner.get(f"/v1/users/{user}/notifications")).json()
        again = await owner.post(f"/v1/users/{user}/notifications/{first['id']}/read")
    assert before["unread_count"] == 2
    assert read.status_code == 200, read.text
    assert read.json()["is_read"] is True
    read_at = datetime.fromisoformat(read.json()["read_at"])
    assert abs((datetime.now(UTC) - read_at).total_seconds()) < 60
    assert after["unread_count"] == 1
    assert again.status_code == 200
    assert again.json()["read_at"] == read.json()["read_at"]  # reading twice keeps the first mark
    async with service.context.sessions() as session:
        row = await session.get(Notification, uuid.UUID(first["id"]))
        assert row is not None and row.is_read and row.read_at is not None


async def test_mark_read_of_another_users_notification_is_404(service: RunningService) -> None:
    owner, other = new_user(), new_user()
    async with service.client() as client:
        theirs = (await client.post("/v1/notifications", json=notification_body(owner))).json()
    async with service.client(await service.user_token(other)) as intruder:
        response = await intruder.post(f"/v1/users/{other}/notifications/{theirs['id']}/read")
        unknown = await intruder.post(f"/v1/users/{other}/notifications/{uuid.uuid4()}/read")
    assert_error(response, 404, "not_found")
    assert_error(unknown, 404, "not_found")
    async with service.context.sessions() as session:
        row = await session.get(Notification, uuid.UUID(theirs["id"]))
        assert row is not None and row.is_read is False and row.read_at is None


async def test_read_all(service: RunningService) -> None:
    user, bystander = new_user(), new_user()
    async with service.client() as client:
        for _ in range(3):
            await client.post("/v1/notifications", json=notification_body(user))
        await client.post("/v1/notifications", json=notification_body(bystander))
    async with service.client(await service.user_token(user)) as owner:
        response = await owner.post(f"/v1/users/{user}/notifications/read-all")
        inbox = (await owner.get(f"/v1/users/{user}/notifications")).json()
    assert response.status_code == 200, response.text
    assert response.json() == {"updated": 3, "unread_count": 0}
    assert inbox["unread_count"] == 0
    assert all(n["is_read"] and n["read_at"] for n in inbox["items"])
    async with service.context.sessions() as session:
        rows = (
            await session.execute(select(Notification).where(Notification.user_id == bystander))
        ).scalars()
        assert [r.is_read for r in rows] == [False]
