"""Digest, throttle, escalation and cancellation key: the issue's bad input is a 422 naming
the field, on the single and the batch enqueue, and writes nothing; good input is stored."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from notifier.models import Notification
from tests.api.helpers import (
    assert_error,
    error_locations,
    new_user,
    notification_body,
    notifications_of,
)
from tests.support.service import RunningService

DIGEST = {"key": "build-failures", "window_seconds": 60}
THROTTLE = {"key": "alerts", "limit": 3, "window_seconds": 60}
STEP = {"after_seconds": 600, "channels": ["email"]}

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("digest window 0", {"digest": {**DIGEST, "window_seconds": 0}}, "window_seconds"),
    ("digest window 86401", {"digest": {**DIGEST, "window_seconds": 86_401}}, "window_seconds"),
    ("digest window as text", {"digest": {**DIGEST, "window_seconds": "60"}}, "window_seconds"),
    ("digest leading as 0", {"digest": {**DIGEST, "leading": 0}}, "leading"),
    ("step channel repeated", {"escalation": [{**STEP, "channels": ["sms", "sms"]}]}, "channels"),
    ("throttle window 0", {"throttle": {**THROTTLE, "window_seconds": 0}}, "window_seconds"),
    ("throttle limit 0", {"throttle": {**THROTTLE, "limit": 0}}, "limit"),
    ("digest key uppercase", {"digest": {**DIGEST, "key": "Build"}}, "key"),
    ("digest key of 58", {"digest": {**DIGEST, "key": "k" * 58}}, "key"),
    ("throttle key with space", {"throttle": {**THROTTLE, "key": "a b"}}, "key"),
    ("cancellation key of 58", {"cancellation_key": "c" * 58}, "cancellation_key"),
    ("cancellation key slash", {"cancellation_key": "a/b"}, "cancellation_key"),
    ("digest unknown field", {"digest": {**DIGEST, "trailing": True}}, "trailing"),
    (
        "steps not increasing",
        {"escalation": [STEP, {**STEP, "channels": ["sms"]}]},
        "escalation",
    ),
    (
        "step channel among the channels",
        {"channels": ["websocket", "email"], "escalation": [STEP]},
        "escalation",
    ),
    (
        "step channel twice across steps",
        {"escalation": [STEP, {**STEP, "after_seconds": 900}]},
        "escalation",
    ),
    ("unknown unless", {"escalation": [{**STEP, "unless": "clicked"}]}, "unless"),
    ("step after 0", {"escalation": [{**STEP, "after_seconds": 0}]}, "after_seconds"),
    ("step after 604801", {"escalation": [{**STEP, "after_seconds": 604_801}]}, "after_seconds"),
    ("step unknown channel", {"escalation": [{**STEP, "channels": ["fax"]}]}, "channels"),
    ("no steps", {"escalation": []}, "escalation"),
]


@pytest.mark.parametrize(
    ("fields", "field"), [(f, n) for _, f, n in BAD], ids=[c for c, _, _ in BAD]
)
async def test_bad_plan_is_422_and_writes_nothing(
    service: RunningService, fields: dict[str, Any], field: str
) -> None:
    user = new_user()
    body = notification_body(user, **fields)
    async with service.client() as client:
        single = await client.post("/v1/notifications", json=body)
        batch = await client.post(
            "/v1/notifications/batch", json={"notifications": [notification_body(user), body]}
        )
    for response in (single, batch):
        error = assert_error(response, 422, "validation_error")
        assert any(field in [str(p) for p in loc] for loc in error_locations(error)), error
    assert await notifications_of(service, user) == 0


async def test_plan_and_key_are_stored_and_steps_shown(service: RunningService) -> None:
    user = new_user()
    body = notification_body(
        user,
        digest={**DIGEST, "key": "k" * 57},
        throttle=THROTTLE,
        escalation=[STEP, {"after_seconds": 900, "channels": ["sms"], "unless": "read"}],
        cancellation_key="approval-1",
    )
    async with service.client() as client:
        response = await client.post("/v1/notifications", json=body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["channels"] == ["websocket"]
    assert set(created["delivery_status"]) == {"websocket", "email", "sms"}
    assert created["delivery_status"]["websocket"]["next_attempt_at"] is None
    for channel in ("email", "sms"):
        assert created["delivery_status"][channel]["status"] == "pending"
        assert created["delivery_status"][channel]["next_attempt_at"] is not None
    async with service.context.sessions() as session:
        row = (
            await session.execute(select(Notification).where(Notification.user_id == user))
        ).scalar_one()
    assert row.cancellation_key == "approval-1"
    assert row.delivery_plan == {
        "digest": {"key": "k" * 57, "window_seconds": 60, "leading": False},
        "throttle": THROTTLE,
        "escalation": [
            {**STEP, "unless": "seen"},
            {"after_seconds": 900, "channels": ["sms"], "unless": "read"},
        ],
    }
    # GET shows what the enqueue answered.
    async with service.client() as client:
        fetched = (await client.get(f"/v1/notifications/{created['id']}")).json()
    assert (
        fetched["delivery_status"]["email"]["next_attempt_at"]
        == (created["delivery_status"]["email"]["next_attempt_at"])
    )


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u", "cancellation_key": "Bad Key"},
        {"user_id": "u"},
        {"cancellation_key": "k"},
        {"user_id": "u", "cancellation_key": "k", "extra": 1},
    ],
)
async def test_bad_cancel_by_key_is_422(service: RunningService, body: dict[str, Any]) -> None:
    async with service.client() as client:
        response = await client.post("/v1/notifications/cancel", json=body)
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("ids", [[], ["not-a-uuid"], [str(uuid.uuid4()) for _ in range(101)]])
async def test_bad_seen_is_422(service: RunningService, ids: list[str]) -> None:
    async with service.client() as client:
        response = await client.post(
            f"/v1/users/{new_user()}/notifications/seen", json={"ids": ids}
        )
    assert_error(response, 422, "validation_error")
