"""Enqueue, read back, batch, inbox paging, scheduling and read marks, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from notifier.models import Notification
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


async def test_inbox_is_newest_first_with_unread_count(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        for i in range(3):
            r = await client.post("/v1/notifications", json=notification_body(user, title=f"n{i}"))
            assert r.status_code == 202
        inbox = await client.get(f"/v1/users/{user}/notifications")
    assert inbox.status_code == 200, inbox.text
    page = inbox.json()
    assert [n["title"] for n in page["items"]] == ["n2", "n1", "n0"]
    assert page["unread_count"] == 3
    assert page["next_cursor"] is None


async def test_inbox_for_the_owner_token(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        await client.post("/v1/notifications", json=notification_body(user, title="mine"))
    async with service.client(await service.user_token(user)) as owner:
        inbox = await owner.get(f"/v1/users/{user}/notifications")
    assert inbox.status_code == 200, inbox.text
    assert [n["title"] for n in inbox.json()["items"]] == ["mine"]


async def test_inbox_unread_only(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        ids = []
        for i in range(3):
            r = await client.post("/v1/notifications", json=notification_body(user, title=f"n{i}"))
            ids.append(r.json()["id"])
        read = await client.post(f"/v1/users/{user}/notifications/{ids[1]}/read")
        assert read.status_code == 200, read.text
        unread = await client.get(f"/v1/users/{user}/notifications", params={"unread_only": True})
        everything = await client.get(f"/v1/users/{user}/notifications")
    assert [n["title"] for n in unread.json()["items"]] == ["n2", "n0"]
    assert unread.json()["unread_count"] == 2
    assert [n["title"] for n in everything.json()["items"]] == ["n2", "n1", "n0"]
    assert everything.json()["unread_count"] == 2


async def test_inbox_cursor_paging_over_three_pages(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        expected = []
        for i in range(6):
            r = await client.post("/v1/notifications", json=notification_body(user, title=f"n{i}"))
            expected.append(r.json()["id"])
        expected.reverse()  # newest first
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, object] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            response = await client.get(f"/v1/users/{user}/notifications", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            pages += 1
            assert len(page["items"]) == 2
            assert page["unread_count"] == 6
            seen.extend(n["id"] for n in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages < 3, "more pages than items"
    assert pages == 3
    assert seen == expected


async def test_inbox_garbage_cursor_is_422(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        await client.post("/v1/notifications", json=notification_body(user))
        for cursor in ("garbage!!", "bm90LWEtY3Vyc29y", "%00"):
            response = await client.get(
                f"/v1/users/{user}/notifications", params={"cursor": cursor}
            )
            error = assert_error(response, 422, "validation_error")
            assert "cursor" in error["message"]


async def test_inbox_limit_out_of_range_is_422(service: RunningService) -> None:
    async with service.client() as client:
        for limit in (0, 101):
            response = await client.get(
                f"/v1/users/{new_user()}/notifications", params={"limit": limit}
            )
            error = assert_error(response, 422, "validation_error")
            assert "limit" in error["message"]


async def test_scheduled_notification_is_not_in_the_inbox_yet(service: RunningService) -> None:
    user = new_user()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with service.client() as client:
        scheduled = await client.post(
            "/v1/notifications", json=notification_body(user, title="later", send_at=later)
        )
        assert scheduled.status_code == 202, scheduled.text
        assert datetime.fromisoformat(scheduled.json()["send_at"]) == datetime.fromisoformat(later)
        now = await client.post("/v1/notifications", json=notification_body(user, title="now"))
        assert now.status_code == 202
        inbox = await client.get(f"/v1/users/{user}/notifications")
        by_id = await client.get(f"/v1/notifications/{scheduled.json()['id']}")
    assert [n["title"] for n in inbox.json()["items"]] == ["now"]
    assert inbox.json()["unread_count"] == 1
    assert by_id.status_code == 200  # the producer still sees it
    assert by_id.json()["status"] == "pending"


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


async def test_inbox_paging_with_equal_timestamps(service: RunningService) -> None:
    # A batch can store several rows within one clock tick: paging must still see each once.
    user = new_user()
    same = datetime.now(UTC) - timedelta(minutes=1)
    rows = [
        Notification.build(user_id=user, title=f"n{i}", message="m", now=same) for i in range(5)
    ]
    async with service.context.sessions() as session:
        session.add_all(rows)
        await session.commit()
    seen: list[str] = []
    async with service.client() as client:
        cursor = None
        for _ in range(5):
            params: dict[str, object] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(f"/v1/users/{user}/notifications", params=params)).json()
            seen.extend(n["id"] for n in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert sorted(seen) == sorted(str(r.id) for r in rows)
    assert len(seen) == 5


async def test_batch_items_page_without_duplicates(service: RunningService) -> None:
    user = new_user()
    items = [notification_body(user, title=f"n{i}") for i in range(5)]
    async with service.client() as client:
        created = await client.post("/v1/notifications/batch", json={"notifications": items})
        assert created.status_code == 202, created.text
        pages = []
        cursor = None
        for _ in range(5):
            params: dict[str, object] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(f"/v1/users/{user}/notifications", params=params)).json()
            pages.extend(n["id"] for n in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert sorted(pages) == sorted(n["id"] for n in created.json()["notifications"])
    assert len(pages) == 5


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
