"""Enqueue (one or a batch), read back by id, cancel and retry, on both databases. The inbox's
listing and paging: test_notifications_inbox.py; read marks: test_notifications_read.py."""

from __future__ import annotations

import uuid
from datetime import datetime

from tests.api.helpers import (
    assert_error,
    new_user,
    notification_body,
    notifications_of,
)
from tests.support.service import RunningService

FIELDS = {
    "id",
    "user_id",
    "title",
    "message",
    "notification_type",
    "priority",
    "channels",
    "is_read",
    "read_at",
    "related_task_id",
    "action_url",
    "metadata",
    "status",
    "delivery_status",
    "retry_count",
    "send_at",
    "expires_at",
    "created_at",
    "updated_at",
}


async def test_enqueue_answers_202_with_the_pending_notification(service: RunningService) -> None:
    user = new_user()
    body = notification_body(
        user,
        title="Build finished",
        message="Your export is ready",
        notification_type="success",
        priority="high",
        channels=["websocket", "email"],
        action_url="https://example.com/exports/1",
        metadata={"export": 1},
        related_task_id="task-1",
    )
    async with service.client() as client:
        response = await client.post("/v1/notifications", json=body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert set(created) >= FIELDS
    uuid.UUID(created["id"])
    assert created["user_id"] == user
    assert created["title"] == "Build finished"
    assert created["message"] == "Your export is ready"
    assert created["notification_type"] == "success"
    assert created["priority"] == "high"
    assert created["channels"] == ["websocket", "email"]
    assert created["action_url"] == "https://example.com/exports/1"
    assert created["metadata"] == {"export": 1}
    assert created["related_task_id"] == "task-1"
    assert created["status"] == "pending"
    assert created["retry_count"] == 0
    assert created["is_read"] is False and created["read_at"] is None
    assert set(created["delivery_status"]) == {"websocket", "email"}
    email, websocket = created["delivery_status"]["email"], created["delivery_status"]["websocket"]
    assert email["status"] == "pending" and email["attempts"] == 0
    # The websocket fast path: published by the API right after the commit (README, settings).
    assert websocket["status"] == "sent" and websocket["attempts"] == 1
    assert email["last_error"] is None and websocket["last_error"] is None
    assert datetime.fromisoformat(created["created_at"]).tzinfo is not None
    assert await notifications_of(service, user) == 1


async def test_enqueue_defaults(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        response = await client.post("/v1/notifications", json=notification_body(user))
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["notification_type"] == "info"
    assert created["priority"] == "normal"
    assert created["channels"] == ["websocket"]
    assert list(created["delivery_status"]) == ["websocket"]


async def test_get_by_id_with_key_and_owner_token(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        created = (await client.post("/v1/notifications", json=notification_body(user))).json()
        by_key = await client.get(f"/v1/notifications/{created['id']}")
    assert by_key.status_code == 200, by_key.text
    assert by_key.json()["id"] == created["id"]
    assert by_key.json()["delivery_status"]["websocket"]["status"] == "sent"  # the fast path
    assert by_key.json()["retry_count"] == 0

    async with service.client(await service.user_token(user)) as owner:
        by_owner = await owner.get(f"/v1/notifications/{created['id']}")
    assert by_owner.status_code == 200, by_owner.text
    assert by_owner.json() == by_key.json()


async def test_get_by_id_with_another_users_token_is_404_without_data(
    service: RunningService,
) -> None:
    owner, other = new_user(), new_user()
    async with service.client() as client:
        created = (
            await client.post(
                "/v1/notifications", json=notification_body(owner, title="Secret title")
            )
        ).json()
    async with service.client(await service.user_token(other)) as intruder:
        response = await intruder.get(f"/v1/notifications/{created['id']}")
    assert_error(response, 404, "not_found")
    assert "Secret title" not in response.text
    assert owner not in response.text


async def test_get_unknown_id_is_404(service: RunningService) -> None:
    async with service.client() as client:
        response = await client.get(f"/v1/notifications/{uuid.uuid4()}")
        malformed = await client.get("/v1/notifications/not-a-uuid")
    assert_error(response, 404, "not_found")
    assert_error(malformed, 422, "validation_error")


async def test_batch_enqueue(service: RunningService) -> None:
    user = new_user()
    items = [notification_body(user, title=f"n{i}") for i in range(3)]
    async with service.client() as client:
        response = await client.post("/v1/notifications/batch", json={"notifications": items})
    assert response.status_code == 202, response.text
    created = response.json()["notifications"]
    assert [n["title"] for n in created] == ["n0", "n1", "n2"]
    assert len({n["id"] for n in created}) == 3
    # websocket alone: sent by the fast path at enqueue, so the notification is delivered
    assert all(n["status"] == "delivered" for n in created)
    assert all(n["delivery_status"]["websocket"]["status"] == "sent" for n in created)
    assert await notifications_of(service, user) == 3


async def test_batch_of_1001_is_refused_and_writes_nothing(service: RunningService) -> None:
    user = new_user()
    items = [notification_body(user, title=f"n{i}") for i in range(1001)]
    async with service.client() as client:
        response = await client.post("/v1/notifications/batch", json={"notifications": items})
    error = assert_error(response, 422, "validation_error")
    assert "notifications" in error["message"]
    assert await notifications_of(service, user) == 0


async def test_batch_with_one_bad_item_writes_nothing(service: RunningService) -> None:
    user = new_user()
    items = [notification_body(user), notification_body(user, channels=["pigeon"])]
    async with service.client() as client:
        response = await client.post("/v1/notifications/batch", json={"notifications": items})
    assert_error(response, 422, "validation_error")
    assert await notifications_of(service, user) == 0


async def test_cancel_then_retry(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        created = (
            await client.post(
                # Not websocket: the fast path sends it at enqueue, leaving nothing to cancel.
                "/v1/notifications",
                json=notification_body(user, channels=["sms", "email"]),
            )
        ).json()
        cancelled = await client.post(f"/v1/notifications/{created['id']}/cancel")
        again = await client.post(f"/v1/notifications/{created['id']}/cancel")
        retry = await client.post(f"/v1/notifications/{created['id']}/retry")
        inbox = (await client.get(f"/v1/users/{user}/notifications")).json()
        unknown = await client.post(f"/v1/notifications/{uuid.uuid4()}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert {c["status"] for c in cancelled.json()["delivery_status"].values()} == {"cancelled"}
    assert_error(again, 409, "conflict")
    assert_error(retry, 409, "conflict")  # nothing failed
    assert_error(unknown, 404, "not_found")
    assert inbox["items"] == [] and inbox["unread_count"] == 0
