"""One user's token never reaches another user's data: HTTP answers 404 (as if it did not exist)
without a trace of the other user's data in the body and without changing anything, and the
other user's notifications and task progress never arrive on this user's WebSocket."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import websockets
from sqlalchemy import select

from notifier.models import Notification, PushSubscription
from tests.security.conftest import assert_envelope, frames_until_quiet, next_frame, ws_url
from tests.support.service import RunningService
from workers.dispatcher import Dispatcher


@dataclass
class Victim:
    user_id: str
    notification_id: str
    task_id: str
    endpoint: str
    secrets: tuple[str, ...]  # strings of theirs that must never show up in a reply to another


def _b64url(size: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(size)).rstrip(b"=").decode()


async def make_victim(service: RunningService) -> Victim:
    user = f"victim-{uuid.uuid4().hex[:10]}"
    task_id = f"victim-task-{uuid.uuid4().hex[:10]}"
    title = f"Victim secret title {uuid.uuid4().hex}"
    log_line = f"victim private log {uuid.uuid4().hex}"
    # An IP literal: checked as public without DNS. Nothing is ever pushed to it.
    endpoint = f"https://1.1.1.1/push/victim/{uuid.uuid4().hex}"
    async with service.client() as producer:
        created = await producer.post(
            "/v1/notifications",
            json={"user_id": user, "title": title, "message": "private", "channels": ["email"]},
        )
        assert created.status_code == 202, created.text
        task = await producer.post(
            "/v1/tasks", json={"task_id": task_id, "user_id": user, "task_type": "secret-job"}
        )
        assert task.status_code == 201, task.text
        log = await producer.post(f"/v1/tasks/{task_id}/logs", json={"message": log_line})
        assert log.status_code == 201, log.text
        recipient = await producer.put(
            f"/v1/users/{user}/recipient", json={"email": "victim@example.com"}
        )
        assert recipient.status_code == 200, recipient.text
    async with service.client(await service.user_token(user)) as own:
        subscribed = await own.post(
            f"/v1/users/{user}/push-subscriptions",
            json={"endpoint": endpoint, "keys": {"p256dh": _b64url(65), "auth": _b64url(16)}},
        )
    assert subscribed.status_code == 201, subscribed.text
    notification_id = created.json()["id"]
    return Victim(
        user,
        notification_id,
        task_id,
        endpoint,
        (user, notification_id, task_id, title, log_line, "victim@example.com", endpoint),
    )


def assert_no_trace(response: httpx.Response, victim: Victim) -> None:
    for secret in victim.secrets:
        assert secret not in response.text, (secret, response.text)


async def test_other_users_data_is_404_and_untouched(service: RunningService) -> None:
    victim = await make_victim(service)
    attacker = f"attacker-{uuid.uuid4().hex[:10]}"
    token = await service.user_token(attacker)
    v, n, t = victim.user_id, victim.notification_id, victim.task_id
    attempts = [
        ("GET", f"/v1/notifications/{n}", None),
        ("GET", f"/v1/tasks/{t}", None),
        ("GET", f"/v1/tasks/{t}/logs", None),
        ("GET", f"/v1/users/{v}/notifications", None),
        ("GET", f"/v1/users/{v}/notifications?unread_only=true", None),
        ("GET", f"/v1/users/{v}/tasks", None),
        ("GET", f"/v1/users/{v}/recipient", None),
        ("POST", f"/v1/users/{v}/notifications/{n}/read", None),
        ("POST", f"/v1/users/{attacker}/notifications/{n}/read", None),  # own path, their id
        ("POST", f"/v1/users/{v}/notifications/read-all", None),
        (
            "POST",
            f"/v1/users/{v}/push-subscriptions",
            {
                "endpoint": "https://1.1.1.1/push/attacker",
                "keys": {"p256dh": _b64url(65), "auth": _b64url(16)},
            },
        ),
        ("DELETE", f"/v1/users/{v}/push-subscriptions?endpoint={victim.endpoint}", None),
        ("DELETE", f"/v1/users/{attacker}/push-subscriptions?endpoint={victim.endpoint}", None),
    ]
    async with service.client(token) as client:
        for method, url, body in attempts:
            response = await client.request(method, url, json=body)
            assert_envelope(response, 404, "not_found")
            assert_no_trace(response, victim)

        # And what the attacker may see of their own holds nothing of the victim's.
        own_inbox = await client.get(f"/v1/users/{attacker}/notifications")
        assert own_inbox.status_code == 200 and own_inbox.json()["items"] == []
        assert_no_trace(own_inbox, victim)

    async with service.context.sessions() as session:
        row = await session.get(Notification, uuid.UUID(n))
        assert row is not None and row.is_read is False and row.read_at is None
        owners = {
            s.endpoint: s.user_id
            for s in (await session.execute(select(PushSubscription))).scalars()
        }
    assert owners.get(victim.endpoint) == v  # still there, still theirs
    assert attacker not in owners.values()
    assert "https://1.1.1.1/push/attacker" not in owners


async def test_a_users_socket_gets_only_that_users_frames(
    service: RunningService, dispatcher: Dispatcher
) -> None:
    victim = f"victim-{uuid.uuid4().hex[:10]}"
    attacker = f"attacker-{uuid.uuid4().hex[:10]}"
    task_id = f"victim-task-{uuid.uuid4().hex[:10]}"
    victim_token = await service.user_token(victim)
    attacker_token = await service.user_token(attacker)
    async with (
        websockets.connect(ws_url(service, attacker_token)) as attacker_socket,
        websockets.connect(ws_url(service, victim_token)) as victim_socket,
    ):
        # Both sockets are registered once they answer a ping.
        for socket in (attacker_socket, victim_socket):
            await socket.send(json.dumps({"type": "ping"}))
            await next_frame(socket, "pong")

        async with service.client() as producer:
            created = await producer.post(
                "/v1/notifications",
                json={"user_id": victim, "title": "for the victim only", "message": "secret"},
            )
            assert created.status_code == 202, created.text
            task = await producer.post(
                "/v1/tasks", json={"task_id": task_id, "user_id": victim, "task_type": "job"}
            )
            assert task.status_code == 201, task.text
            patched = await producer.patch(
                f"/v1/tasks/{task_id}", json={"status": "running", "progress": 50}
            )
            assert patched.status_code == 200, patched.text

        # The victim gets the notification, the task's progress (and its progress notification).
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(15):
            while not (
                any(f["type"] == "task_progress" for f in seen)
                and any(
                    f["type"] == "notification" and f["notification"]["id"] == created.json()["id"]
                    for f in seen
                )
            ):
                seen.append(json.loads(await victim_socket.recv()))
        assert all(f["notification"]["user_id"] == victim for f in seen if "notification" in f)

        # The victim's frames are out; give the attacker's socket time for any stray one.
        await asyncio.sleep(0.3)
        await attacker_socket.send(json.dumps({"type": "ping"}))
        frames = await frames_until_quiet(attacker_socket)
        assert frames == [{"type": "pong"}], frames

        # An ack for the victim's notification from the attacker's socket changes nothing.
        await attacker_socket.send(json.dumps({"type": "ack", "id": created.json()["id"]}))
        await frames_until_quiet(attacker_socket, quiet=0.3)
    async with service.client() as producer:
        body = (await producer.get(f"/v1/notifications/{created.json()['id']}")).json()
    assert body["delivery_status"]["websocket"]["status"] != "delivered", body

    # A new socket for the attacker replays nothing of the victim's.
    async with websockets.connect(ws_url(service, attacker_token)) as again:
        await again.send(json.dumps({"type": "ping"}))
        assert await frames_until_quiet(again) == [{"type": "pong"}]
