"""What the fuzzers found, pinned: each request below once got a 500 (or was stored when it
should have been refused) on at least one backend. Now each is refused with 4xx and the error
envelope, on SQLite and on PostgreSQL. See tests/RESULTS.md."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.support.service import RunningService


def note(extra: str) -> str:
    """A notification body (for user ``{u}``) with one more raw JSON member."""
    return '{"user_id": "{u}", "title": "t", "message": "m", ' + extra + "}"


def task(extra: str) -> str:
    return '{"task_id": "{u}", "user_id": "{u}", "task_type": "x", ' + extra + "}"


FORGED_CURSOR = (
    base64.urlsafe_b64encode(f"0001-01-01T00:00:00+14:00|{uuid.UUID(int=1)}".encode())
    .decode()
    .rstrip("=")
)

# (name, method, path, raw JSON body or None, expected status)
CASES: list[tuple[str, str, str, str | None, int]] = [
    # PostgreSQL's JSONB refuses these (500); SQLite stored NaN that no JSON reader accepts.
    ("NaN in metadata", "POST", "/v1/notifications", note('"metadata": {"x": NaN}'), 422),
    (
        "Infinity in metadata",
        "POST",
        "/v1/notifications",
        note('"metadata": {"x": -Infinity}'),
        422,
    ),
    ("1e400 in metadata", "POST", "/v1/notifications", note('"metadata": {"x": 1e400}'), 422),
    (
        "NUL in a metadata value",
        "POST",
        "/v1/notifications",
        note('"metadata": {"x": "a\\u0000b"}'),
        422,
    ),
    ("NUL in a metadata key", "POST", "/v1/notifications", note('"metadata": {"\\u0000": 1}'), 422),
    (
        "NUL in task_metadata",
        "POST",
        "/v1/tasks",
        task('"task_metadata": {"a": ["\\u0000"]}'),
        422,
    ),
    (
        "NaN in task_metadata",
        "POST",
        "/v1/tasks",
        task('"task_metadata": {"a": NaN}'),
        422,
    ),
    (
        "NUL in recipient preferences",
        "PUT",
        "/v1/users/{u}/recipient",
        '{"preferences": {"a": "\\u0000"}}',
        422,
    ),
    # Too long for the column (varchar(35)): a 500 on PostgreSQL.
    (
        "locale over 35 characters",
        "PUT",
        "/v1/users/{u}/recipient",
        '{"locale": "TS-5RN2B0gA-ic-O0x_BJFR0SgH-hc-R7MylyKJ-u9"}',
        422,
    ),
    # A number (or digits) taken for seconds since 1970.
    ("send_at as digits", "POST", "/v1/notifications", note('"send_at": "0"'), 422),
    ("send_at as a number", "POST", "/v1/notifications", note('"send_at": 1700000000'), 422),
    ("metrics since as digits", "GET", "/v1/metrics?name=x&since=0", None, 422),
    # Date-times with no UTC equivalent (OverflowError in the driver, or an hour before year 1).
    ("metrics until year 1", "GET", "/v1/metrics?name=x&until=0001-01-01T00:00:00Z", None, 422),
    (
        "send_at past year 9999 in UTC",
        "POST",
        "/v1/notifications",
        note('"send_at": "9999-12-31T23:59:59-14:00"'),
        422,
    ),
    # NUL in query text compared with columns: a 500 on PostgreSQL.
    ("NUL in metrics name", "GET", "/v1/metrics?name=%00", None, 422),
    ("NUL in metrics task_id", "GET", "/v1/metrics?name=x&task_id=a%00", None, 422),
    # JSON true/false taken for 1/0.
    ("estimated_duration false", "POST", "/v1/tasks", task('"estimated_duration": false'), 422),
    ("total_steps true", "POST", "/v1/tasks", task('"total_steps": true'), 422),
    ("ttl_seconds as a string", "POST", "/v1/users/{u}/tokens", '{"ttl_seconds": "3600"}', 422),
    # A push endpoint whose host is a public address literal passed every check, and its NUL
    # reached PostgreSQL (issue 10, item 6): a 500.
    (
        "NUL in a push endpoint",
        "POST",
        "/v1/users/{u}/push-subscriptions",
        '{"endpoint": "https://8.8.8.8/push/a\\u0000b", "keys": {"p256dh": "'
        + "B" * 87
        + '", "auth": "'
        + "A" * 22
        + '"}}',
        422,
    ),
    # Found by tests/fuzz/test_storable_strings.py once templates were merged: a 500.
    (
        "NUL in a template description",
        "PUT",
        "/v1/templates/{u}",
        '{"description": "a\\u0000b", "locales": {"en": {"title": "t", "message": "m"}}}',
        422,
    ),
    # A host label over 63 characters: Python's IDNA codec raised UnicodeError while the URL
    # was being resolved, a 500 (found by the all-checks run, for push and webhook URLs).
    (
        "64-character label in a push endpoint",
        "POST",
        "/v1/users/{u}/push-subscriptions",
        '{"endpoint": "https://'
        + "a" * 64
        + '.example.com/p", "keys": {"p256dh": "'
        + "B" * 87
        + '", "auth": "'
        + "A" * 22
        + '"}}',
        422,
    ),
    (
        "64-character label in a webhook URL",
        "POST",
        "/v1/webhook-endpoints",
        '{"url": "https://' + "a" * 64 + '.example.com/hook", "events": ["*"]}',
        422,
    ),
    # A cursor naming a moment no database holds (year 1 at UTC+14): a 500 on PostgreSQL.
    (
        "inbox cursor before year 1 in UTC",
        "GET",
        "/v1/users/{u}/notifications?cursor=" + FORGED_CURSOR,
        None,
        422,
    ),
    # A body that is not UTF-8 was a 400 the document did not declare (now it does).
    ("body not UTF-8", "POST", "/v1/notifications", '{"title": "\udcc3("}', 400),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "status"), CASES, ids=[c[0] for c in CASES]
)
async def test_refused_with_the_envelope(
    service: RunningService, name: str, method: str, path: str, body: str | None, status: int
) -> None:
    user = f"fz-{uuid.uuid4().hex[:10]}"
    content = None
    if body is not None:
        content = body.replace("{u}", user).encode("utf-8", "surrogateescape")
    async with service.client() as client:
        response = await client.request(
            method,
            path.replace("{u}", user),
            content=content,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == status, (name, response.text)
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    async with service.client() as client:
        inbox = await client.get(f"/v1/users/{user}/notifications")
        assert inbox.json()["items"] == []
        assert (await client.get(f"/v1/tasks/{user}")).status_code == 404
        assert (await client.get(f"/v1/users/{user}/recipient")).status_code == 404


async def test_a_task_log_cursor_before_year_1_in_utc_is_refused(service: RunningService) -> None:
    task_id = f"fz-{uuid.uuid4().hex[:10]}"
    async with service.client() as client:
        created = await client.post(
            "/v1/tasks", json={"task_id": task_id, "user_id": task_id, "task_type": "x"}
        )
        assert created.status_code == 201
        response = await client.get(f"/v1/tasks/{task_id}/logs?cursor={FORGED_CURSOR}")
    assert response.status_code == 422, response.text
    assert "cursor" in response.json()["error"]["message"]
