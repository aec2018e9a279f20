"""Idempotency-Key on enqueue: replays, conflicts, per-key scoping and concurrent races."""

from __future__ import annotations

import asyncio
import uuid

from tests.api.helpers import assert_error, new_user, notification_body, notifications_of
from tests.support.service import RunningService


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"idem-{uuid.uuid4().hex}"}


async def test_same_key_and_body_replays_the_first_response(service: RunningService) -> None:
    user = new_user()
    headers = key()
    body = notification_body(user, channels=["websocket", "email"])
    async with service.client() as client:
        first = await client.post("/v1/notifications", json=body, headers=headers)
        second = await client.post("/v1/notifications", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert await notifications_of(service, user) == 1


async def test_same_key_other_body_is_409(service: RunningService) -> None:
    user = new_user()
    headers = key()
    async with service.client() as client:
        first = await client.post(
            "/v1/notifications", json=notification_body(user), headers=headers
        )
        other = await client.post(
            "/v1/notifications", json=notification_body(user, title="Other"), headers=headers
        )
    assert first.status_code == 202, first.text
    assert_error(other, 409, "conflict")
    assert await notifications_of(service, user) == 1


async def test_same_key_under_another_api_key_is_independent(service: RunningService) -> None:
    user = new_user()
    headers = key()
    body = notification_body(user)
    async with service.client() as one, service.client("test-key-2-0123456789") as two:
        first = await one.post("/v1/notifications", json=body, headers=headers)
        second = await two.post("/v1/notifications", json=body, headers=headers)
        replay_two = await two.post("/v1/notifications", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert second.status_code == 202, second.text
    assert second.json()["id"] != first.json()["id"]
    assert replay_two.status_code == 200
    assert replay_two.json()["id"] == second.json()["id"]
    assert await notifications_of(service, user) == 2


async def test_batch_replay(service: RunningService) -> None:
    user = new_user()
    headers = key()
    body = {"notifications": [notification_body(user, title=f"n{i}") for i in range(2)]}
    async with service.client() as client:
        first = await client.post("/v1/notifications/batch", json=body, headers=headers)
        second = await client.post("/v1/notifications/batch", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert await notifications_of(service, user) == 2


async def test_invalid_idempotency_key_is_422_and_writes_nothing(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        response = await client.post(
            "/v1/notifications",
            json=notification_body(user),
            headers={"Idempotency-Key": "x" * 256},
        )
    assert_error(response, 422, "validation_error")
    assert await notifications_of(service, user) == 0


async def test_twenty_concurrent_requests_with_one_key_create_one_row(
    service: RunningService,
) -> None:
    user = new_user()
    headers = key()
    body = notification_body(user)
    async with service.client() as client:
        responses = await asyncio.gather(
            *(client.post("/v1/notifications", json=body, headers=headers) for _ in range(20))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [202], [r.text for r in responses if r.status_code >= 300]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await notifications_of(service, user) == 1
