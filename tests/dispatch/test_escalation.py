"""Escalation end to end (docs/architecture.md, "Digest, throttle and escalation"): a step's
channels wait as ``pending`` until the step's time, go out through the real worker to the real
SMTP peer, and are ``skipped`` in the same transaction as an ack, a seen mark or a read that
comes first; a cancellation key stops them too."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from typing import Any

import websockets

from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def step(after: int, unless: str = "seen") -> list[dict[str, Any]]:
    return [{"after_seconds": after, "channels": ["email"], "unless": unless}]


async def escalating(stack: Stack, user: str, after: int = 1, **fields: Any) -> dict[str, Any]:
    await stack.put_recipient(user, email=f"{user}@example.com")
    return await stack.notify(
        user_id=user,
        title="Approve deploy",
        message="waiting for you",
        channels=["websocket"],
        escalation=step(after, fields.pop("unless", "seen")),
        **fields,
    )


def step_time(created: dict[str, Any]) -> float:
    due = created["delivery_status"]["email"]["next_attempt_at"]
    return datetime.fromisoformat(due).timestamp()


async def test_step_waits_then_goes_out_when_not_seen(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        created = await escalating(stack, user)
        email = created["delivery_status"]["email"]
        assert email["status"] == "pending" and email["next_attempt_at"] is not None
        assert created["channels"] == ["websocket"]
        # The websocket went out; the step still waits, and the notification with it.
        waiting = await stack.wait_channel(created["id"], "websocket", "sent")
        if waiting["delivery_status"]["email"]["status"] == "pending":
            assert waiting["status"] == "dispatching"
        [message_id] = await smtp_peer.wait_for_accepted(1)
        body = await stack.wait_settled(created["id"])

    assert body["delivery_status"]["email"]["status"] == "delivered"
    assert message_id == f"<{created['id']}@notifier.test>"
    [(_, arrived)] = smtp_peer.arrivals
    assert arrived >= step_time(created) - 0.01  # not before the step's time


async def test_dispatching_while_the_step_waits_then_settled_when_seen(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        created = await escalating(stack, user, after=600)
        waiting = await stack.wait_channel(created["id"], "websocket", "sent")
        marked = await stack.api.post(
            f"/v1/users/{user}/notifications/seen", json={"ids": [created["id"]]}
        )
        assert marked.json() == {"skipped": 1}
        seen = await stack.get(created["id"])

    assert waiting["delivery_status"]["email"]["status"] == "pending"
    assert waiting["status"] == "dispatching"  # the step waits: not "pending"
    assert seen["delivery_status"]["email"]["status"] == "skipped"
    assert seen["status"] == "delivered"
    assert smtp_peer.messages == []


async def test_seen_mark_skips_the_step(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    seen_user, control_user = new_user(), new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        seen = await escalating(stack, seen_user)
        marked = await stack.api.post(
            f"/v1/users/{seen_user}/notifications/seen", json={"ids": [seen["id"]]}
        )
        assert marked.status_code == 200, marked.text
        assert marked.json() == {"skipped": 1}
        body = await stack.get(seen["id"])
        # Control: one enqueued after, due after: once its email is in, the worker has passed
        # the seen one's step time.
        control = await escalating(stack, control_user)
        [message_id] = await smtp_peer.wait_for_accepted(1)
        again = await stack.api.post(
            f"/v1/users/{seen_user}/notifications/seen", json={"ids": [seen["id"]]}
        )

    assert body["delivery_status"]["email"]["status"] == "skipped"
    assert body["delivery_status"]["email"]["last_error"] == "seen before escalation"
    assert message_id == f"<{control['id']}@notifier.test>"
    assert smtp_peer.rcpts == [f"{control_user}@example.com"]
    assert again.json() == {"skipped": 0}  # nothing left to skip


async def test_ack_50ms_before_the_step_sends_no_email(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user, control_user = new_user(), new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        token = await stack.service.user_token(user)
        settings = stack.service.settings
        url = f"ws://{settings.host}:{settings.port}/v1/ws?token={token}"
        async with websockets.connect(url) as socket:
            created = await escalating(stack, user)
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
                if frame["type"] == "notification":
                    break
            # The scenario, not a synchronisation: the ack lands 50 ms before the step.
            await asyncio.sleep(max(0.0, step_time(created) - 0.05 - time.time()))
            await socket.send(json.dumps({"type": "ack", "id": created["id"]}))
            while json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] != "acked":
                pass
        control = await escalating(stack, control_user)
        await smtp_peer.wait_for_accepted(1)
        body = await stack.wait_settled(created["id"])

    assert body["delivery_status"]["websocket"]["status"] == "delivered"
    assert body["delivery_status"]["email"]["status"] == "skipped"
    assert body["delivery_status"]["email"]["last_error"] == "seen before escalation"
    assert smtp_peer.rcpts == [f"{control_user}@example.com"], control["id"]


async def test_read_skips_read_steps_but_seen_does_not(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings(), worker=False) as stack:
        created = await escalating(stack, user, after=60, unless="read")
        seen = await stack.api.post(
            f"/v1/users/{user}/notifications/seen", json={"ids": [created["id"]]}
        )
        after_seen = await stack.get(created["id"])
        read = await stack.api.post(f"/v1/users/{user}/notifications/read-all")
        after_read = await stack.get(created["id"])

    assert seen.json() == {"skipped": 0}
    assert after_seen["delivery_status"]["email"]["status"] == "pending"
    assert read.status_code == 200
    assert after_read["delivery_status"]["email"]["status"] == "skipped"
    assert after_read["delivery_status"]["email"]["last_error"] == "read before escalation"
    assert smtp_peer.connections == 0


async def test_cancellation_key_stops_waiting_steps(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user, other = new_user(), new_user()
    async with running_stack(db_url, **smtp_peer.settings(), worker=False) as stack:
        first = await escalating(stack, user, after=60, cancellation_key="approval-42")
        second = await escalating(stack, user, after=60, cancellation_key="approval-42")
        kept = await escalating(stack, user, after=60, cancellation_key="approval-43")
        elsewhere = await escalating(stack, other, after=60, cancellation_key="approval-42")
        cancelled = await stack.api.post(
            "/v1/notifications/cancel", json={"user_id": user, "cancellation_key": "approval-42"}
        )
        repeat = await stack.api.post(
            "/v1/notifications/cancel", json={"user_id": user, "cancellation_key": "approval-42"}
        )
        bodies = [await stack.get(n["id"]) for n in (first, second, kept, elsewhere)]

    assert cancelled.status_code == 200, cancelled.text
    # Two notifications, each with its websocket and its waiting email step.
    assert cancelled.json() == {"notifications": 2, "channels": 4}
    assert repeat.json() == {"notifications": 0, "channels": 0}
    for body in bodies[:2]:
        assert body["status"] == "cancelled"
        assert {d["status"] for d in body["delivery_status"].values()} == {"cancelled"}
    for body in bodies[2:]:
        assert body["delivery_status"]["email"]["status"] == "pending"
