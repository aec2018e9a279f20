"""Credentials: missing, garbage, expired and tampered ones are 401; a user token reaches only
its own user's data (others look absent: 404) and never a producer-only endpoint (403)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from notifier.models import Notification, Recipient, TaskLog, TaskProgress
from tests.api.helpers import (
    assert_error,
    count,
    create_task,
    new_task_id,
    new_user,
    notification_body,
    notifications_of,
    subscriptions_of,
)
from tests.support.service import RunningService


@dataclass
class Owned:
    user_id: str
    notification_id: str
    task_id: str


@pytest.fixture
async def owned(service: RunningService) -> Owned:
    user = new_user()
    async with service.client() as client:
        created = await client.post(
            "/v1/notifications", json=notification_body(user, title="Private title")
        )
        assert created.status_code == 202, created.text
        task = await create_task(client, user)
        log = await client.post(
            f"/v1/tasks/{task['task_id']}/logs", json={"message": "private log line"}
        )
        assert log.status_code == 201, log.text
    return Owned(user, created.json()["id"], task["task_id"])


# (method, path template, JSON body or None); templates use the `owned` resources.
BEARER_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/notifications", {"user_id": "x", "title": "t", "message": "m"}),
    (
        "POST",
        "/v1/notifications/batch",
        {"notifications": [{"user_id": "x", "title": "t", "message": "m"}]},
    ),
    ("GET", "/v1/notifications/{n}", None),
    ("POST", "/v1/notifications/{n}/retry", None),
    ("POST", "/v1/notifications/{n}/cancel", None),
    ("GET", "/v1/users/{u}/notifications", None),
    ("POST", "/v1/users/{u}/notifications/{n}/read", None),
    ("POST", "/v1/users/{u}/notifications/read-all", None),
    ("PUT", "/v1/users/{u}/recipient", {"email": "a@example.com"}),
    ("GET", "/v1/users/{u}/recipient", None),
    ("POST", "/v1/users/{u}/tokens", None),
    (
        "POST",
        "/v1/users/{u}/push-subscriptions",
        {"endpoint": "https://push.example.com/x", "keys": {"p256dh": "A" * 20, "auth": "B" * 10}},
    ),
    ("DELETE", "/v1/users/{u}/push-subscriptions?endpoint=https://push.example.com/x", None),
    ("POST", "/v1/tasks", {"task_id": "t", "user_id": "x", "task_type": "export"}),
    ("PATCH", "/v1/tasks/{t}", {"progress": 10}),
    ("GET", "/v1/tasks/{t}", None),
    ("POST", "/v1/tasks/{t}/logs", {"message": "hi"}),
    ("GET", "/v1/tasks/{t}/logs", None),
    ("GET", "/v1/users/{u}/tasks", None),
]

PRODUCER_ONLY = [
    ("POST", "/v1/notifications"),
    ("POST", "/v1/notifications/batch"),
    ("POST", "/v1/notifications/{n}/retry"),
    ("POST", "/v1/notifications/{n}/cancel"),
    ("PUT", "/v1/users/{u}/recipient"),
    ("POST", "/v1/users/{u}/tokens"),
    ("POST", "/v1/tasks"),
    ("PATCH", "/v1/tasks/{t}"),
    ("POST", "/v1/tasks/{t}/logs"),
]


def _path(template: str, owned: Owned) -> str:
    return template.format(u=owned.user_id, n=owned.notification_id, t=owned.task_id)


async def _send(
    service: RunningService, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        return await client.request(method, path, json=body, headers=headers)


def _expired_token(service: RunningService, user_id: str) -> str:
    secret = service.settings.token_secret
    assert secret is not None
    past = datetime.now(UTC) - timedelta(hours=2)
    claims = {"sub": user_id, "typ": "user", "iat": past, "exp": past + timedelta(hours=1)}
    return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")


def _tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    # Flip a character in the middle: the last one may only carry padding bits.
    i = len(signature) // 2
    flipped = "A" if signature[i] != "A" else "B"
    return f"{head}.{payload}.{signature[:i]}{flipped}{signature[i + 1 :]}"


def _foreign_token(user_id: str) -> str:
    claims = {"sub": user_id, "typ": "user", "exp": datetime.now(UTC) + timedelta(hours=1)}
    return jwt.encode(claims, "some-other-secret-that-is-long-enough", algorithm="HS256")


def _unsigned(user_id: str) -> str:
    claims = {"sub": user_id, "typ": "user", "exp": datetime.now(UTC) + timedelta(hours=1)}
    return jwt.encode(claims, None, algorithm="none")


def _wrong_type(service: RunningService, user_id: str) -> str:
    secret = service.settings.token_secret
    assert secret is not None
    claims = {"sub": user_id, "typ": "refresh", "exp": datetime.now(UTC) + timedelta(hours=1)}
    return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")


CREDENTIALS = [
    "none",
    "not-bearer",
    "empty-bearer",
    "garbage",
    "expired",
    "tampered",
    "other-secret",
    "alg-none",
    "wrong-typ",
]


async def _headers(service: RunningService, owned: Owned, kind: str) -> dict[str, str]:
    if kind == "none":
        return {}
    if kind == "not-bearer":
        return {"Authorization": "Basic dGVzdC1rZXktMS0wMTIzNDU2Nzg5Og=="}
    if kind == "empty-bearer":
        return {"Authorization": "Bearer"}
    if kind == "garbage":
        return {"Authorization": "Bearer garbage"}
    if kind == "alg-none":
        return {"Authorization": f"Bearer {_unsigned(owned.user_id)}"}
    if kind == "wrong-typ":
        return {"Authorization": f"Bearer {_wrong_type(service, owned.user_id)}"}
    if kind == "expired":
        return {"Authorization": f"Bearer {_expired_token(service, owned.user_id)}"}
    if kind == "tampered":
        token = await service.user_token(owned.user_id)
        return {"Authorization": f"Bearer {_tampered(token)}"}
    return {"Authorization": f"Bearer {_foreign_token(owned.user_id)}"}


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize(
    ("method", "template", "body"),
    BEARER_ENDPOINTS,
    ids=[f"{m} {p}" for m, p, _ in BEARER_ENDPOINTS],
)
async def test_bad_credentials_are_401(
    service: RunningService, method: str, template: str, body: Any, credential: str
) -> None:
    # The credential is checked before anything is looked up: ids need not exist.
    owned = Owned(new_user(), str(uuid.uuid4()), new_task_id())
    headers = await _headers(service, owned, credential)
    response = await _send(service, method, _path(template, owned), body, headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_bad_credentials_write_nothing(service: RunningService, owned: Owned) -> None:
    user, task_id = new_user(), new_task_id()
    headers = await _headers(service, owned, "expired")
    async with httpx.AsyncClient(base_url=service.base_url, headers=headers) as client:
        r1 = await client.post("/v1/notifications", json=notification_body(user))
        r2 = await client.post(
            "/v1/tasks", json={"task_id": task_id, "user_id": user, "task_type": "x"}
        )
        r3 = await client.post(f"/v1/tasks/{owned.task_id}/logs", json={"message": "x"})
        r4 = await client.put(f"/v1/users/{user}/recipient", json={"email": "a@example.com"})
        r5 = await client.post(f"/v1/users/{owned.user_id}/notifications/read-all")
    for response in (r1, r2, r3, r4, r5):
        assert_error(response, 401, "unauthorized")
    assert await notifications_of(service, user) == 0
    assert await count(service, TaskProgress.task_id == task_id, model=TaskProgress) == 0
    assert await count(service, TaskLog.task_id == owned.task_id, model=TaskLog) == 1
    assert await count(service, Recipient.user_id == user, model=Recipient) == 0
    assert (
        await count(
            service,
            Notification.user_id == owned.user_id,
            Notification.is_read.is_(True),
            model=Notification,
        )
        == 0
    )


@pytest.mark.parametrize(
    ("method", "template"), PRODUCER_ONLY, ids=[m + " " + p for m, p in PRODUCER_ONLY]
)
async def test_user_token_on_producer_endpoint_is_403(
    service: RunningService, owned: Owned, method: str, template: str
) -> None:
    body = next(b for m, p, b in BEARER_ENDPOINTS if (m, p) == (method, template))
    if isinstance(body, dict) and body.get("user_id") == "x":
        body = {**body, "user_id": owned.user_id}
    if template == "/v1/notifications/batch":
        body = {"notifications": [notification_body(owned.user_id)]}
    token = await service.user_token(owned.user_id)
    response = await _send(
        service, method, _path(template, owned), body, {"Authorization": f"Bearer {token}"}
    )
    assert_error(response, 403, "forbidden")
    # Nothing was written: still one notification, one task, one log, no recipient.
    assert await notifications_of(service, owned.user_id) == 1
    assert await count(service, TaskProgress.user_id == owned.user_id, model=TaskProgress) == 1
    assert await count(service, TaskLog.task_id == owned.task_id, model=TaskLog) == 1
    assert await count(service, Recipient.user_id == owned.user_id, model=Recipient) == 0
    async with service.client() as client:
        task = (await client.get(f"/v1/tasks/{owned.task_id}")).json()
    assert task["status"] == "pending" and task["progress"] == 0


OTHER_USERS_DATA = [
    ("GET", "/v1/users/{u}/notifications", None),
    ("GET", "/v1/notifications/{n}", None),
    ("POST", "/v1/users/{u}/notifications/{n}/read", None),
    ("POST", "/v1/users/{u}/notifications/read-all", None),
    ("GET", "/v1/users/{u}/recipient", None),
    ("GET", "/v1/tasks/{t}", None),
    ("GET", "/v1/tasks/{t}/logs", None),
    ("GET", "/v1/users/{u}/tasks", None),
    (
        "POST",
        "/v1/users/{u}/push-subscriptions",
        {"endpoint": "https://push.example.com/y", "keys": {"p256dh": "A" * 20, "auth": "B" * 10}},
    ),
    ("DELETE", "/v1/users/{u}/push-subscriptions?endpoint=https://push.example.com/y", None),
]


@pytest.mark.parametrize(
    ("method", "template", "body"),
    OTHER_USERS_DATA,
    ids=[m + " " + p for m, p, _ in OTHER_USERS_DATA],
)
async def test_user_token_on_another_users_data_is_404(
    service: RunningService, owned: Owned, method: str, template: str, body: Any
) -> None:
    async with service.client() as client:
        recipient = await client.put(
            f"/v1/users/{owned.user_id}/recipient", json={"email": "private@example.com"}
        )
        assert recipient.status_code == 200, recipient.text
    intruder = await service.user_token(new_user())
    response = await _send(
        service, method, _path(template, owned), body, {"Authorization": f"Bearer {intruder}"}
    )
    error = assert_error(response, 404, "not_found")
    assert error["details"] is None
    for secret in ("Private title", "private log line", "private@example.com", owned.user_id):
        assert secret not in response.text
    async with service.client() as client:
        inbox = (await client.get(f"/v1/users/{owned.user_id}/notifications")).json()
    assert inbox["unread_count"] == 1  # nothing was marked read
    assert await subscriptions_of(service, owned.user_id) == 0


async def test_user_token_reaches_its_own_data(service: RunningService, owned: Owned) -> None:
    async with service.client(await service.user_token(owned.user_id)) as client:
        responses = [
            await client.get(f"/v1/users/{owned.user_id}/notifications"),
            await client.get(f"/v1/notifications/{owned.notification_id}"),
            await client.get(f"/v1/tasks/{owned.task_id}"),
            await client.get(f"/v1/tasks/{owned.task_id}/logs"),
        ]
    for response in responses:
        assert response.status_code == 200, response.text
    assert responses[3].json()["items"][0]["message"] == "private log line"
