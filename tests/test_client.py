"""The producer client (``notifier.client``) against a real running service, both databases.

The only test doubles here are of the *network*: httpx transports that answer 503 once, or drop
the answer, before or after forwarding to the real server. Nothing of our server is mocked.
The sync client runs in a thread (``asyncio.to_thread``) so that it does not block the server,
which runs in this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from notifier.client import AsyncNotifierClient, NotifierClient, NotifierError, notification_body
from tests.support.service import RunningService


def _unavailable(request: httpx.Request) -> httpx.Response:
    body = {"error": {"code": "unavailable", "message": "simulated", "details": None}}
    return httpx.Response(503, json=body, headers={"Retry-After": "0"}, request=request)


class FlakySyncTransport(httpx.BaseTransport):
    """Network test double: the first request gets a 503 without reaching the server; every
    request after that goes to the real server. Records each request's Idempotency-Key."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("Idempotency-Key"))
        if len(self.keys) == 1:
            return _unavailable(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class FlakyAsyncTransport(httpx.AsyncBaseTransport):
    """Network test double, async. ``lose_first_answer``: the first request *does* reach the
    server, but its answer is lost on the way back (a read error): the outcome is unknown to the
    client, which is exactly when an idempotency key matters."""

    def __init__(self, *, lose_first_answer: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose_first_answer = lose_first_answer
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) > 1:
            return await self.inner.handle_async_request(request)
        if not self.lose_first_answer:
            return _unavailable(request)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        await response.aclose()
        raise httpx.ReadError("connection reset while reading the answer", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _user() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"


async def _inbox(service: RunningService, user: str) -> dict[str, Any]:
    async with service.client() as http:
        response = await http.get(f"/v1/users/{user}/notifications", params={"limit": 100})
        response.raise_for_status()
        return dict(response.json())


async def test_sync_notify_returns_the_created_notification(service: RunningService) -> None:
    user = _user()

    def run() -> dict[str, Any]:
        with NotifierClient(service.base_url, service.api_key) as client:
            return client.notify(
                user, "Hello", "from the sync client", priority="high", metadata={"k": 1}
            )

    created = await asyncio.to_thread(run)
    assert created["user_id"] == user
    assert created["title"] == "Hello"
    assert created["priority"] == "high"
    assert created["metadata"] == {"k": 1}
    # The websocket fast path: the enqueue itself records the frame published
    # (README, settings: WEBSOCKET_GRACE_SECONDS), so every channel is already out.
    assert created["status"] == "delivered"
    assert created["delivery_status"]["websocket"]["status"] == "sent"
    assert (await _inbox(service, user))["items"][0]["id"] == created["id"]


async def test_sync_retry_after_503_reuses_the_key(service: RunningService) -> None:
    user = _user()
    transport = FlakySyncTransport()

    def run() -> dict[str, Any]:
        with NotifierClient(service.base_url, service.api_key, transport=transport) as client:
            return client.notify(user, "Once", "even when retried")

    created = await asyncio.to_thread(run)
    assert len(transport.keys) == 2
    assert transport.keys[0] is not None and transport.keys[0] == transport.keys[1]
    inbox = await _inbox(service, user)
    assert [item["id"] for item in inbox["items"]] == [created["id"]]


async def test_async_retry_after_503_creates_one_notification(service: RunningService) -> None:
    user = _user()
    transport = FlakyAsyncTransport()
    async with AsyncNotifierClient(service.base_url, service.api_key, transport=transport) as c:
        created = await c.notify(user, "Once", "async, retried after a 503")
    keys = [r.headers["Idempotency-Key"] for r in transport.requests]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert [item["id"] for item in (await _inbox(service, user))["items"]] == [created["id"]]


async def test_async_retry_after_lost_answer_replays_instead_of_duplicating(
    service: RunningService,
) -> None:
    user = _user()
    transport = FlakyAsyncTransport(lose_first_answer=True)
    async with AsyncNotifierClient(
        service.base_url, service.api_key, transport=transport, backoff=0.01
    ) as client:
        created = await client.notify(user, "Lost answer", "stored on the first try")
    assert len(transport.requests) == 2
    inbox = await _inbox(service, user)
    assert [item["id"] for item in inbox["items"]] == [created["id"]]


async def test_error_log_retried_after_lost_answer_is_stored_and_notified_once(
    service: RunningService,
) -> None:
    user, task_id = _user(), f"t-{uuid.uuid4().hex[:10]}"
    transport = FlakyAsyncTransport(lose_first_answer=True)
    async with AsyncNotifierClient(service.base_url, service.api_key) as client:
        await client.create_task(task_id, user, "import")
    async with AsyncNotifierClient(
        service.base_url, service.api_key, transport=transport, backoff=0.01
    ) as client:
        entry = await client.log(task_id, "ERROR", "stored once")
    keys = [r.headers["Idempotency-Key"] for r in transport.requests]
    assert len(keys) == 2 and keys[0] == keys[1]
    async with service.client() as http:
        logs = (await http.get(f"/v1/tasks/{task_id}/logs")).json()
    assert [item["id"] for item in logs["items"]] == [entry["id"]]
    errors = [
        n for n in (await _inbox(service, user))["items"] if n["notification_type"] == "error"
    ]
    assert len(errors) == 1


async def test_validation_error_is_typed(service: RunningService) -> None:
    async with AsyncNotifierClient(service.base_url, service.api_key) as client:
        with pytest.raises(NotifierError) as raised:
            await client.notify(_user(), "Bad", "channel", channels=["pigeon"])
    error = raised.value
    assert error.status == 422
    assert error.code == "validation_error"
    assert error.message
    assert isinstance(error.details, list) and error.details[0]["loc"][:2] == ["body", "channels"]

    def sync_call() -> NotifierError:
        with NotifierClient(service.base_url, service.api_key) as client:
            try:
                client.get_notification(uuid.uuid4())
            except NotifierError as exc:
                return exc
        raise AssertionError("expected a NotifierError")

    missing = await asyncio.to_thread(sync_call)
    assert (missing.status, missing.code) == (404, "not_found")


async def test_bad_api_key_is_not_retried(service: RunningService) -> None:
    calls: list[httpx.Request] = []
    inner = httpx.AsyncHTTPTransport()

    class Counting(httpx.AsyncBaseTransport):  # network test double: counts, then forwards
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            calls.append(request)
            return await inner.handle_async_request(request)

    async with AsyncNotifierClient(service.base_url, "wrong-key", transport=Counting()) as client:
        with pytest.raises(NotifierError) as raised:
            await client.notify(_user(), "x", "y")
    await inner.aclose()
    assert raised.value.status == 401 and raised.value.code == "unauthorized"
    assert len(calls) == 1


async def test_batch_and_explicit_idempotency_key(service: RunningService) -> None:
    user = _user()
    items = [notification_body(user, f"n{i}", "batch", priority="low") for i in range(3)]
    async with AsyncNotifierClient(service.base_url, service.api_key) as client:
        created = await client.notify_batch(items)
        assert [n["title"] for n in created] == ["n0", "n1", "n2"]
        key = f"k-{uuid.uuid4()}"
        first = await client.notify(user, "keyed", "once", idempotency_key=key)
        again = await client.notify(user, "keyed", "once", idempotency_key=key)
        assert first["id"] == again["id"]
        with pytest.raises(NotifierError) as conflict:
            await client.notify(user, "keyed", "another body", idempotency_key=key)
        assert (conflict.value.status, conflict.value.code) == (409, "conflict")
    assert len((await _inbox(service, user))["items"]) == 4


async def test_task_flow_creates_a_success_notification(service: RunningService) -> None:
    user, task_id = _user(), f"t-{uuid.uuid4().hex[:10]}"

    def run() -> list[dict[str, Any]]:
        with NotifierClient(service.base_url, service.api_key) as client:
            steps = [client.create_task(task_id, user, "export", total_steps=3, tags=["csv"])]
            steps.append(client.task_started(task_id))
            steps.append(client.task_progress(task_id, 55, current_step="writing"))
            steps.append(client.task_completed(task_id, result={"rows": 12}))
            steps.append(client.task_completed(task_id, result={"rows": 12}))  # repeat: no-op
            return steps

    created, started, progressed, completed, repeated = await asyncio.to_thread(run)
    assert created["status"] == "pending" and created["tags"] == ["csv"]
    assert started["status"] == "running"
    assert progressed["progress_percentage"] == 55 and progressed["current_step"] == "writing"
    assert completed["status"] == "completed" and completed["result"] == {"rows": 12}
    assert repeated["status"] == "completed"

    inbox = await _inbox(service, user)
    successes = [n for n in inbox["items"] if n["notification_type"] == "success"]
    assert len(successes) == 1
    assert successes[0]["related_task_id"] == task_id


async def test_async_task_failure_and_logs(service: RunningService) -> None:
    user, task_id = _user(), f"t-{uuid.uuid4().hex[:10]}"
    async with AsyncNotifierClient(service.base_url, service.api_key) as client:
        await client.create_task(task_id, user, "import")
        await client.task_started(task_id)
        entry = await client.log(task_id, "ERROR", "row 7 is malformed", context={"row": 7})
        assert entry["level"] == "ERROR" and entry["context"] == {"row": 7}
        failed = await client.task_failed(task_id, "gave up", error_details={"rows": [7]})
        assert failed["status"] == "failed" and failed["error_message"] == "gave up"
        task = await client.get_task(task_id)
        assert task["status"] == "failed"
        token = await client.user_token(user)
    errors = [
        n for n in (await _inbox(service, user))["items"] if n["notification_type"] == "error"
    ]
    assert len(errors) == 2  # the ERROR log and the failure
    # The minted token reads the user's own inbox.
    async with service.client(token=token["token"]) as http:
        own = await http.get(f"/v1/users/{user}/notifications")
    assert own.status_code == 200 and json.loads(own.text)["unread_count"] == 2
