"""A notification's WebSocket frame is one object: the frame the worker publishes live, the frame
replayed when the client reconnects without acking, and GET /v1/notifications/{id} agree key for
key and value for value (docs/architecture.md, "Notification shape").

Before, the live frame was built from the worker's message (12 keys) and the replay from the
row's API dict (19 keys): a client saw the same notification in two shapes, depending on
whether it was connected when it went out. Real WebSocket clients, a real dispatcher, both
databases.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import websockets

from notifier.models.shape import FRAME_FIELDS, PUBLIC_FIELDS
from tests.realtime.sockets import listening, next_frame, ws_url
from tests.support.service import RunningService
from tests.support.worker import dispatcher_beside
from workers.dispatcher import Dispatcher


@pytest.fixture(scope="module")
async def dispatcher(service: RunningService) -> AsyncIterator[Dispatcher]:
    async with dispatcher_beside(service) as running:
        yield running


async def test_live_and_replayed_frames_are_the_same_object(
    service: RunningService, dispatcher: Dispatcher
) -> None:
    await listening(service)
    user = f"shape-{uuid.uuid4().hex[:8]}"
    token = await service.user_token(user)
    now = datetime.now(UTC)
    plus_two = timezone(timedelta(hours=2))
    # Every optional field set, a time with a non-UTC offset: each is a chance to differ.
    body = {
        "user_id": user,
        "title": "Deploy finished",
        "message": "All 12 steps passed.",
        "notification_type": "success",
        "priority": "high",
        "channels": ["websocket", "email"],  # email unconfigured here: skipped, still listed
        "related_task_id": "task-42",
        "action_url": "https://app.example.com/deploys/42",
        "metadata": {"build": 42, "tags": ["a", "b"], "nested": {"ok": True}},
        "send_at": (now - timedelta(minutes=1)).astimezone(plus_two).isoformat(),
        "expires_at": (now + timedelta(days=1)).isoformat(),
    }
    async with service.client() as client:
        async with websockets.connect(ws_url(service, token)) as socket:
            created = await client.post("/v1/notifications", json=body)
            assert created.status_code == 202, created.text
            live = (await next_frame(socket, "notification"))["notification"]
        # The live frame goes out only once `sent` is recorded, so the replay finds it now.
        async with websockets.connect(ws_url(service, token)) as socket:
            replayed = (await next_frame(socket, "notification"))["notification"]
        public = (await client.get(f"/v1/notifications/{created.json()['id']}")).json()

    assert live["id"] == created.json()["id"]
    assert list(live) == list(FRAME_FIELDS)
    assert replayed == live
    assert list(replayed) == list(live)  # the same order too
    # Every frame field is a public field, with the value GET shows for it.
    assert set(live) <= set(PUBLIC_FIELDS)
    assert {k: public[k] for k in live} == live
    assert live["metadata"] == body["metadata"]
    assert live["channels"] == ["websocket", "email"]
    assert live["is_read"] is False
