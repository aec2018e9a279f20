"""A user's inbox on both databases: newest first with the unread count, for the owner's token,
unread only, cursor paging (over equal timestamps and batch items too), and scheduled
notifications kept out until due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from notifier.models import Notification
from tests.api.helpers import (
    assert_error,
    new_user,
    notification_body,
)
from tests.support.service import RunningService


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
