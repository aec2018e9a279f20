"""Bad input is a 422 JSON error that names the field, and writes nothing; bodies over the limit
are 413; unknown routes are 404; all in the JSON error envelope."""

from __future__ import annotations

import json
import re
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


# ------------------------------------------------------ the document and the validation agree


def _schema(document: dict[str, Any], name: str, *fields: str) -> dict[str, Any]:
    """The schema of ``name.fields...`` in the document, a nullable one's non-null branch."""
    schema = document["components"]["schemas"][name]
    for field in fields:
        schema = schema["properties"][field]
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    return dict(branches[0])


def _pattern_allows(schema: dict[str, Any], value: str) -> bool:
    # As JSON Schema reads a pattern (ECMA-262: `$` is the very end).
    pattern = schema["pattern"]
    return re.search(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern, value) is not None


async def test_values_the_document_refused_to_describe_are_refused_by_both(
    service: RunningService,
) -> None:
    """What schemathesis flagged as schema-valid yet refused (issue 10, item 12): the document
    now refuses each too, and the server still does."""
    user = new_user()
    async with service.client() as client:
        document = (await client.get("/openapi.json")).json()
        url = await client.post("/v1/notifications", json=notification_body(user, action_url=""))
        zone = await client.put(f"/v1/users/{user}/recipient", json={"timezone": ""})
        label = await client.get("/v1/metrics", params={"name": "x", "label": ""})
    assert _names_field(assert_error(url, 422, "validation_error"), "action_url")
    assert not _pattern_allows(_schema(document, "NotificationCreate", "action_url"), "")
    assert _names_field(assert_error(zone, 422, "validation_error"), "timezone")
    zones = _schema(document, "RecipientUpsert", "timezone")["enum"]
    assert "" not in zones and "Europe/Berlin" in zones
    assert _names_field(assert_error(label, 422, "validation_error"), "label")
    (parameter,) = [
        p for p in document["paths"]["/v1/metrics"]["get"]["parameters"] if p["name"] == "label"
    ]
    label_schema = parameter["schema"]["anyOf"][0]["items"]
    assert not _pattern_allows(label_schema, "") and _pattern_allows(label_schema, "channel:sms")


async def test_a_whole_number_written_with_a_fraction_is_an_integer(
    service: RunningService,
) -> None:
    """JSON Schema's integer includes 34261.0; a bool or a string is still no number."""
    async with service.client() as client:
        minted = await client.post(f"/v1/users/{new_user()}/tokens", json={"ttl_seconds": 34261.0})
        task = await create_task(client, new_user(), total_steps=3.0)
        bad = await client.post(f"/v1/users/{new_user()}/tokens", json={"ttl_seconds": 3600.5})
        true = await client.post(f"/v1/users/{new_user()}/tokens", json={"ttl_seconds": True})
    assert minted.status_code == 201, minted.text
    assert task["total_steps"] == 3
    assert _names_field(assert_error(bad, 422, "validation_error"), "ttl_seconds")
    assert _names_field(assert_error(true, 422, "validation_error"), "ttl_seconds")


async def test_quiet_hours_defer_takes_only_true_or_false(service: RunningService) -> None:
    user = new_user()
    quiet = {"start": "22:00", "end": "07:00"}
    async with service.client() as client:
        zero = await client.put(
            f"/v1/users/{user}/recipient", json={"quiet_hours": {**quiet, "defer": 0}}
        )
        stored = await client.put(
            f"/v1/users/{user}/recipient", json={"quiet_hours": {**quiet, "defer": True}}
        )
    assert _names_field(assert_error(zero, 422, "validation_error"), "defer")
    assert stored.json()["quiet_hours"]["defer"] is True


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/notifications/batch", "POST"),  # not read as GET /v1/notifications/{id}
        ("DELETE", "/v1/notifications/batch", "POST"),
        ("OPTIONS", "/v1/tasks/t-1", "GET, PATCH"),
        ("OPTIONS", "/v1/tasks/t-1/logs", "GET, POST"),
        ("PUT", "/v1/users/u-1/push-subscriptions", "DELETE, POST"),
        ("DELETE", "/v1/users/u-1/recipient", "GET, PATCH, PUT"),
    ],
)
async def test_a_method_the_path_does_not_serve_is_405_with_every_allowed_method(
    service: RunningService, method: str, path: str, allowed: str
) -> None:
    async with service.client() as client:
        response = await client.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed


async def test_a_body_not_sent_as_json_is_told_which_header_to_send(
    service: RunningService,
) -> None:
    body = json.dumps(notification_body(new_user())).encode()
    async with service.client() as client:
        bare = await client.post("/v1/notifications", content=body)
        text = await client.post(
            "/v1/notifications", content=body, headers={"Content-Type": "text/plain"}
        )
    for response, sent in ((bare, "none"), (text, "text/plain")):
        error = assert_error(response, 422, "validation_error")
        assert "Content-Type: application/json" in error["message"], error
        assert sent in error["message"], error


async def test_every_error_body_is_serialised_alike(service: RunningService) -> None:
    """The 413 (written below the framework) is byte for byte what a JSONResponse writes."""
    limit = service.settings.max_body_bytes
    async with service.client() as client:
        too_large = await client.post(
            "/v1/notifications", json=notification_body(new_user(), message="x" * (limit + 10))
        )
        not_found = await client.get("/v1/nope")
    for response in (too_large, not_found):
        assert_error(response, response.status_code)
        compact = json.dumps(response.json(), separators=(",", ":"), ensure_ascii=False)
        assert response.content == compact.encode(), response.content
