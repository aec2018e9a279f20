"""Bad input is a 422 JSON error that names the field, and writes nothing; bodies over the limit
are 413; unknown routes are 404; all in the JSON error envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.helpers import (
    assert_error,
    create_task,
    error_locations,
    new_user,
    notification_body,
    notifications_of,
    recipients_of,
)
from tests.support.service import RunningService

LATER = datetime.now(UTC) + timedelta(days=1)

# (case id, fields merged into a valid notification body, the field the error must name)
BAD_NOTIFICATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown channel", {"channels": ["websocket", "pigeon"]}, "channels"),
    ("unknown priority", {"priority": "critical"}, "priority"),
    ("unknown type", {"notification_type": "alert"}, "notification_type"),
    ("javascript url", {"action_url": "javascript:alert(1)"}, "action_url"),
    ("ftp url", {"action_url": "ftp://x"}, "action_url"),
    ("url with newline", {"action_url": "https://example.com/\r\nX-Evil: 1"}, "action_url"),
    ("CR in title", {"title": "Hello\rWorld"}, "title"),
    ("LF in title", {"title": "Hello\nWorld"}, "title"),
    ("NUL in title", {"title": "Hello\x00World"}, "title"),
    ("NUL in message", {"message": "Hello\x00World"}, "message"),
    ("title of 201 chars", {"title": "x" * 201}, "title"),
    ("empty title", {"title": ""}, "title"),
    ("metadata over 16 KiB", {"metadata": {"blob": "x" * 16_400}}, "metadata"),
    ("unknown extra field", {"colour": "red"}, "colour"),
    ("naive send_at", {"send_at": "2030-01-01T10:00:00"}, "send_at"),
    (
        "expires_at before send_at",
        {
            "send_at": LATER.isoformat(),
            "expires_at": (LATER - timedelta(hours=1)).isoformat(),
        },
        "expires_at",
    ),
    (
        "expires_at equal to send_at",
        {"send_at": LATER.isoformat(), "expires_at": LATER.isoformat()},
        "expires_at",
    ),
    ("empty channels", {"channels": []}, "channels"),
    ("repeated channels", {"channels": ["email", "email"]}, "channels"),
    ("invalid override email", {"recipient": {"email": "not-an-email"}}, "email"),
    ("override phone not E.164", {"recipient": {"phone": "0155 1234"}}, "phone"),
    ("user_id missing", {"user_id": None}, "user_id"),
]


def _names_field(error: dict[str, Any], field: str) -> bool:
    return any(field in [str(p) for p in loc] for loc in error_locations(error))


@pytest.mark.parametrize(
    ("fields", "field"),
    [(f, n) for _, f, n in BAD_NOTIFICATIONS],
    ids=[c for c, _, _ in BAD_NOTIFICATIONS],
)
async def test_bad_notification_is_422_naming_the_field(
    service: RunningService, fields: dict[str, Any], field: str
) -> None:
    user = new_user()
    body = {k: v for k, v in {**notification_body(user), **fields}.items() if v is not None}
    async with service.client() as client:
        response = await client.post("/v1/notifications", json=body)
        batch = await client.post("/v1/notifications/batch", json={"notifications": [body]})
    for r in (response, batch):
        error = assert_error(r, 422, "validation_error")
        assert field in error["message"], error
        assert _names_field(error, field), error
    assert await notifications_of(service, user) == 0


async def test_metadata_just_under_16_kib_is_accepted(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        response = await client.post(
            "/v1/notifications",
            json=notification_body(user, metadata={"blob": "x" * 16_000}),
        )
    assert response.status_code == 202, response.text


async def test_invalid_json_body_is_422(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        response = await client.post(
            "/v1/notifications",
            content=f'{{"user_id": "{user}", "title": "x", ',
            headers={"Content-Type": "application/json"},
        )
        not_an_object = await client.post("/v1/notifications", json=["a"])
    assert_error(response, 422, "validation_error")
    assert_error(not_an_object, 422, "validation_error")
    assert await notifications_of(service, user) == 0


async def test_empty_body_is_422(service: RunningService) -> None:
    async with service.client() as client:
        response = await client.post("/v1/notifications")
    error = assert_error(response, 422, "validation_error")
    assert "body" in error["message"]


@pytest.mark.parametrize("progress", [101, -1, 100.5, "lots"])
async def test_task_progress_out_of_range_is_422(service: RunningService, progress: object) -> None:
    user = new_user()
    async with service.client() as client:
        task = await create_task(client, user)
        response = await client.patch(f"/v1/tasks/{task['task_id']}", json={"progress": progress})
        after = (await client.get(f"/v1/tasks/{task['task_id']}")).json()
    error = assert_error(response, 422, "validation_error")
    assert "progress" in error["message"]
    assert _names_field(error, "progress")
    assert after["progress"] == 0 and after["status"] == "pending"
    assert await notifications_of(service, user) == 0


async def test_unknown_task_status_is_422(service: RunningService) -> None:
    async with service.client() as client:
        task = await create_task(client, new_user())
        response = await client.patch(f"/v1/tasks/{task['task_id']}", json={"status": "done"})
    error = assert_error(response, 422, "validation_error")
    assert _names_field(error, "status")


async def test_unknown_log_level_is_422_and_writes_nothing(service: RunningService) -> None:
    async with service.client() as client:
        task = await create_task(client, new_user())
        response = await client.post(
            f"/v1/tasks/{task['task_id']}/logs", json={"level": "FATAL", "message": "x"}
        )
        logs = (await client.get(f"/v1/tasks/{task['task_id']}/logs")).json()
    error = assert_error(response, 422, "validation_error")
    assert _names_field(error, "level")
    assert logs["items"] == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"phone": "0155 1234"}, "phone"),
        ({"phone": "+0123456789"}, "phone"),
        ({"phone": "14155550123"}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b@c"}, "email"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "start"),
        ({"nickname": "x"}, "nickname"),
    ],
    ids=[
        "phone-spaces",
        "phone-leading-zero",
        "phone-no-plus",
        "email",
        "email-two-at",
        "tz",
        "quiet-hours",
        "extra-field",
    ],
)
async def test_bad_recipient_is_422_and_writes_nothing(
    service: RunningService, fields: dict[str, Any], field: str
) -> None:
    user = new_user()
    async with service.client() as client:
        response = await client.put(f"/v1/users/{user}/recipient", json=fields)
    error = assert_error(response, 422, "validation_error")
    assert _names_field(error, field), error
    assert field in error["message"]
    assert await recipients_of(service, user) == 0


async def test_body_over_the_limit_with_content_length_is_413(service: RunningService) -> None:
    user = new_user()
    limit = service.settings.max_body_bytes
    body = notification_body(user, message="x" * (limit + 10))
    async with service.client() as client:
        response = await client.post("/v1/notifications", json=body)
    assert_error(response, 413, "payload_too_large")
    assert await notifications_of(service, user) == 0


async def test_chunked_body_over_the_limit_is_413(service: RunningService) -> None:
    user = new_user()
    limit = service.settings.max_body_bytes
    head = f'{{"user_id": "{user}", "title": "t", "message": "'.encode()
    chunk = b"x" * 65_536

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield b'"}'

    async with service.client() as client:
        response = await client.post(
            "/v1/notifications",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
    assert "content-length" not in response.request.headers
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_error(response, 413, "payload_too_large")
    assert await notifications_of(service, user) == 0


async def test_chunked_body_under_the_limit_is_accepted(service: RunningService) -> None:
    user = new_user()

    async def chunks() -> AsyncIterator[bytes]:
        yield f'{{"user_id": "{user}", '.encode()
        yield b'"title": "t", "message": "m"}'

    async with service.client() as client:
        response = await client.post(
            "/v1/notifications", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 202, response.text
    assert await notifications_of(service, user) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nope"), ("GET", "/nope"), ("POST", "/v1/notifications/x/y/z")],
)
async def test_unknown_route_is_404_json(service: RunningService, method: str, path: str) -> None:
    async with service.client() as client:
        response = await client.request(method, path)
    assert_error(response, 404, "not_found")


async def test_wrong_method_is_405_json(service: RunningService) -> None:
    async with service.client() as client:
        response = await client.delete("/v1/notifications")
    assert_error(response, 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "template", "body", "field"),
    [
        ("PUT", "/v1/users/{id}/recipient", {"email": "a@example.com"}, "user_id"),
        ("GET", "/v1/users/{id}/notifications", None, "user_id"),
        ("POST", "/v1/users/{id}/tokens", None, "user_id"),
        ("GET", "/v1/tasks/{id}", None, "task_id"),
        ("PATCH", "/v1/tasks/{id}", {"progress": 1}, "task_id"),
        ("GET", "/v1/tasks/{id}/logs", None, "task_id"),
    ],
)
@pytest.mark.parametrize("bad_id", ["x" * 256, "a%00b", "a%0Ab"], ids=["long", "nul", "lf"])
async def test_bad_ids_in_the_path_are_422(
    service: RunningService, method: str, template: str, body: Any, field: str, bad_id: str
) -> None:
    async with service.client() as client:
        response = await client.request(method, template.format(id=bad_id), json=body)
    error = assert_error(response, 422, "validation_error")
    assert _names_field(error, field), error
    if method == "PUT" and "%00" not in bad_id:  # PostgreSQL cannot even compare with NUL
        assert await recipients_of(service, bad_id.replace("%0A", "\n")) == 0
