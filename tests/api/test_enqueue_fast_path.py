"""``POST /v1/notifications`` is served outside FastAPI's request handler when it can be
(notifier/api/enqueue_fast.py): what a producer sees must be what the route answered before —
the same 202, the same refusals in the same order, the same error envelope. (Requests with an
``Idempotency-Key`` go the route's way: tests/api/test_idempotency.py.)"""

from __future__ import annotations

import json

import pytest

from tests.api.helpers import assert_error, new_user, notification_body, notifications_of
from tests.support.service import RunningService


async def test_the_202_is_the_notification_as_read_back(service: RunningService) -> None:
    user = new_user()
    body = notification_body(user, metadata={"big": 2**70, "text": "naïve ✓"}, priority="high")
    async with service.client() as client:
        created = await client.post("/v1/notifications", json=body)
        assert created.status_code == 202, created.text
        read = await client.get(f"/v1/notifications/{created.json()['id']}")
    answer, stored = created.json(), read.json()
    # An integer beyond 64 bits (which orjson does not write) comes back as sent.
    assert answer["metadata"] == {"big": 2**70, "text": "naïve ✓"}
    assert list(answer) == list(stored)  # NotificationPublic's fields, in its order
    changing = {"status", "delivery_status", "updated_at", "retry_count"}
    assert {k: v for k, v in answer.items() if k not in changing} == {
        k: v for k, v in stored.items() if k not in changing
    }
    assert created.headers["content-type"] == "application/json"
    assert int(created.headers["content-length"]) == len(created.content)


@pytest.mark.parametrize("valid", [True, False], ids=["valid-body", "invalid-body"])
async def test_a_missing_credential_is_401_whatever_the_body(
    service: RunningService, valid: bool
) -> None:
    """As FastAPI orders them: the credential is judged before the body's schema."""
    user = new_user()
    body = notification_body(user) if valid else {"user_id": user, "title": "only a title"}
    async with service.client() as client:
        client.headers.pop("Authorization")
        response = await client.post("/v1/notifications", json=body)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert await notifications_of(service, user) == 0


async def test_a_user_token_may_not_enqueue(service: RunningService) -> None:
    user = new_user()
    token = await service.user_token(user)
    async with service.client(token) as client:
        response = await client.post("/v1/notifications", json=notification_body(user))
    assert_error(response, 403, "forbidden")
    assert await notifications_of(service, user) == 0


async def test_a_schema_error_names_the_field_in_the_body(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        response = await client.post(
            "/v1/notifications",
            content=json.dumps(notification_body(user, priority="whenever")),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
    error = assert_error(response, 422, "validation_error")
    assert [d["loc"] for d in error["details"]] == [["body", "priority"]], error
    assert error["message"].startswith("body.priority: "), error
    assert await notifications_of(service, user) == 0
