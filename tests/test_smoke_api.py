from __future__ import annotations

import uuid

from tests.support.service import RunningService


async def test_enqueue_and_read_back(service: RunningService) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with service.client() as client:
        created = await client.post(
            "/v1/notifications", json={"user_id": user, "title": "Hi", "message": "there"}
        )
        assert created.status_code == 202, created.text
        inbox = await client.get(f"/v1/users/{user}/notifications")
        assert inbox.status_code == 200, inbox.text
        assert [n["title"] for n in inbox.json()["items"]] == ["Hi"]
        assert inbox.json()["unread_count"] == 1
