"""CR/LF and other control characters never reach a header-like field: a title (an email
subject), an address, an id, an Idempotency-Key. Each is refused with 422 (or, at the HTTP
layer, 400), and a refused request stores nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, or_, select

from notifier.models import Notification, Recipient, TaskProgress
from tests.security.conftest import assert_envelope
from tests.support.service import RunningService

INJECTION = "\r\nBcc: victim@example.com"


def _note(user: str, **fields: Any) -> dict[str, Any]:
    return {"user_id": user, "title": "Hello", "message": "World", **fields}


# (name, method, path, body): each carries INJECTION in a field that must stay one line.
CASES: list[tuple[str, str, str, Any]] = [
    ("title", "POST", "/v1/notifications", _note("{u}", title=f"Hi{INJECTION}")),
    ("bare CR title", "POST", "/v1/notifications", _note("{u}", title="Hi\rBcc: x@y")),
    ("bare LF title", "POST", "/v1/notifications", _note("{u}", title="Hi\nBcc: x@y")),
    ("NUL title", "POST", "/v1/notifications", _note("{u}", title="Hi\x00there")),
    (
        "title in a batch",
        "POST",
        "/v1/notifications/batch",
        {"notifications": [_note("{u}"), _note("{u}", title=f"Hi{INJECTION}")]},
    ),
    ("user_id", "POST", "/v1/notifications", _note("{u}\r\nX-Evil: 1")),
    ("related_task_id", "POST", "/v1/notifications", _note("{u}", related_task_id=f"t{INJECTION}")),
    (
        "action_url",
        "POST",
        "/v1/notifications",
        _note("{u}", action_url=f"https://a.b/{INJECTION}"),
    ),
    (
        "recipient override email",
        "POST",
        "/v1/notifications",
        _note("{u}", channels=["email"], recipient={"email": f"a@example.com{INJECTION}"}),
    ),
    (
        "recipient override phone",
        "POST",
        "/v1/notifications",
        _note("{u}", channels=["sms"], recipient={"phone": "+14155550123\r\n"}),
    ),
    ("stored email", "PUT", "/v1/users/{u}/recipient", {"email": f"a@example.com{INJECTION}"}),
    ("stored locale", "PUT", "/v1/users/{u}/recipient", {"locale": f"en{INJECTION}"}),
    ("stored timezone", "PUT", "/v1/users/{u}/recipient", {"timezone": f"UTC{INJECTION}"}),
    (
        "task_type",
        "POST",
        "/v1/tasks",
        {"task_id": "{u}-task", "user_id": "{u}", "task_type": f"job{INJECTION}"},
    ),
    ("task_id", "POST", "/v1/tasks", {"task_id": "{u}\r\n", "user_id": "{u}", "task_type": "job"}),
]


def _fill(value: Any, user: str) -> Any:
    return json.loads(json.dumps(value).replace("{u}", user))


async def _stored_for(service: RunningService, user: str) -> int:
    async with service.context.sessions() as session:
        total = 0
        for model in (Notification, TaskProgress):
            query = select(func.count()).select_from(model).where(model.user_id.startswith(user))
            total += int((await session.execute(query)).scalar_one())
        query = select(func.count()).select_from(Recipient)
        query = query.where(or_(Recipient.user_id.startswith(user)))
        total += int((await session.execute(query)).scalar_one())
        return total


@pytest.mark.parametrize(("name", "method", "path", "body"), CASES, ids=[c[0] for c in CASES])
async def test_control_characters_in_single_line_fields_are_422(
    service: RunningService, name: str, method: str, path: str, body: Any
) -> None:
    user = f"inj-{uuid.uuid4().hex[:10]}"
    async with service.client() as client:
        response = await client.request(method, path.replace("{u}", user), json=_fill(body, user))
    error = assert_envelope(response, 422, "validation_error")
    assert error["details"], error
    assert "Bcc" not in json.dumps(error)  # the offending input is not echoed back
    assert await _stored_for(service, user) == 0, name


async def test_a_message_may_have_line_breaks(service: RunningService) -> None:
    """The body text is not a header: line breaks are content there."""
    user = f"inj-{uuid.uuid4().hex[:10]}"
    async with service.client() as client:
        response = await client.post(
            "/v1/notifications", json=_note(user, message=f"line one{INJECTION}")
        )
    assert response.status_code == 202, response.text


# ------------------------------------------------------------ Idempotency-Key


@pytest.mark.parametrize(
    "key", ["a\r\nBcc: x", "a\rb", "a\nb", "a\x00b", "clé"], ids=["CRLF", "CR", "LF", "NUL", "é"]
)
async def test_httpx_will_not_send_a_bad_idempotency_key(service: RunningService, key: str) -> None:
    """The client library refuses these before sending; the raw tests below send them anyway."""
    user = f"inj-{uuid.uuid4().hex[:10]}"
    async with service.client() as client:
        try:
            response = await client.post(
                "/v1/notifications", json=_note(user), headers={"Idempotency-Key": key}
            )
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            pass
        else:
            assert_envelope(response, 422, "validation_error")
    assert await _stored_for(service, user) == 0


async def raw_post(service: RunningService, body: bytes, idempotency_key: bytes) -> bytes:
    """POST /v1/notifications written byte for byte; returns the raw response."""
    reader, writer = await asyncio.open_connection(service.settings.host, service.settings.port)
    try:
        writer.write(
            b"POST /v1/notifications HTTP/1.1\r\n"
            b"Host: " + f"{service.settings.host}:{service.settings.port}".encode() + b"\r\n"
            b"Authorization: Bearer " + service.api_key.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n"
            b"Idempotency-Key: " + idempotency_key + b"\r\n"
            b"\r\n" + body
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return response


RAW_KEYS = {
    "bare CR": b"abc\rdef",
    "NUL": b"abc\x00def",
    "UTF-8": "clé-ключ".encode(),
    "Latin-1": b"cl\xe9",
    "DEL": b"abc\x7fdef",
    "space": b"abc def",
    "tab": b"abc\tdef",
    "obs-fold": b"abc\r\n def",
    "too long": b"k" * 256,
}


@pytest.mark.parametrize("raw_key", RAW_KEYS.values(), ids=list(RAW_KEYS))
async def test_raw_bad_idempotency_key_is_refused(service: RunningService, raw_key: bytes) -> None:
    user = f"inj-{uuid.uuid4().hex[:10]}"
    body = json.dumps(_note(user)).encode()
    response = await raw_post(service, body, raw_key)
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"400", b"422"), response[:500]
    if b" 422 " in status_line:
        assert b'"validation_error"' in response
    assert await _stored_for(service, user) == 0


async def test_raw_good_idempotency_key_is_accepted(service: RunningService) -> None:
    """The raw request itself is sound: only the key made the difference above."""
    user = f"inj-{uuid.uuid4().hex[:10]}"
    body = json.dumps(_note(user)).encode()
    response = await raw_post(service, body, uuid.uuid4().hex.encode())
    assert response.startswith(b"HTTP/1.1 202"), response[:500]
    assert await _stored_for(service, user) == 1
