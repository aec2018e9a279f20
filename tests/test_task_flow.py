"""A task run end to end (issue 4): triggers, live progress over a real WebSocket, the task's
one progress notification, the atomicity of event + notification, and the metrics the run leaves
in /metrics (Prometheus, parsed with prometheus-client's parser) and GET /v1/metrics."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from notifier.models import Notification, TaskProgress
from notifier.triggers.rules import task_key
from tests.dispatch.test_websocket_flow import next_frame, wait_for_status, ws_url
from tests.support.service import RunningService
from tests.support.worker import dispatcher_beside
from workers.dispatcher import Dispatcher
from workers.observer import MetricsObserver


@pytest.fixture(scope="module")
async def dispatcher(service: RunningService) -> AsyncIterator[Dispatcher]:
    """A dispatcher that reports into the service's own metrics, as `notifier run` does."""
    observer = MetricsObserver(service.context.metrics, service.context.recorder)
    async with dispatcher_beside(service, observer=observer) as running:
        yield running


def _ids() -> tuple[str, str]:
    return f"flow-{uuid.uuid4().hex[:8]}", f"task-{uuid.uuid4().hex[:10]}"


async def _notifications(service: RunningService, task_id: str) -> list[Notification]:
    async with service.context.sessions() as session:
        query = select(Notification).where(Notification.related_task_id == task_id)
        return list((await session.execute(query.order_by(Notification.created_at))).scalars())


def _iso(api_timestamp: str) -> str:
    """The API writes UTC as "Z"; the trigger's dedupe key uses Python's "+00:00"."""
    return datetime.fromisoformat(api_timestamp.replace("Z", "+00:00")).isoformat()


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _frames_until(
    socket: websockets.ClientConnection, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Every frame the socket receives, until ``done`` holds for those received so far."""
    frames: list[dict[str, Any]] = []
    while not done(frames):
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
    return frames


def _of_kind(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [frame for frame in frames if frame["type"] == kind]


async def test_task_run_end_to_end(service: RunningService, dispatcher: Dispatcher) -> None:
    user, task_id = _ids()
    token = await service.user_token(user)
    async with service.client() as client, websockets.connect(ws_url(service, token)) as socket:
        created = await client.post(
            "/v1/tasks",
            json={"task_id": task_id, "user_id": user, "task_type": "export", "total_steps": 4},
        )
        assert created.status_code == 201, created.text
        reports = [5.0, 10.0, 20.0, 35.0, 50.0, 65.0, 80.0, 95.0]
        for progress in reports:
            response = await client.patch(
                f"/v1/tasks/{task_id}",
                json={"progress": progress, "current_step": f"at {progress}"},
            )
            assert response.status_code == 200, response.text
            if progress == reports[0]:
                # The first report's notification goes out before the others come in, so the
                # later reports meet a notification that was already sent.
                [first] = await _notifications(service, task_id)
                await wait_for_status(service, str(first.id), "websocket", "sent")
        done = await client.patch(f"/v1/tasks/{task_id}", json={"status": "completed"})
        assert done.status_code == 200 and done.json()["progress_percentage"] == 100.0

        def success_arrived(frames: list[dict[str, Any]]) -> bool:
            notes = _of_kind(frames, "notification")
            kinds = [f["notification"]["notification_type"] for f in notes]
            return "success" in kinds and len(_of_kind(frames, "task_progress")) > len(reports)

        frames = await _frames_until(socket, success_arrived)
        success = next(
            f["notification"]
            for f in _of_kind(frames, "notification")
            if f["notification"]["notification_type"] == "success"
        )
        await socket.send(json.dumps({"type": "ack", "id": success["id"]}))
        await next_frame(socket, "acked")

    # Every report reached the owner's socket as a task_progress frame, in order.
    live = _of_kind(frames, "task_progress")
    assert [float(f["task"]["progress_percentage"]) for f in live] == [*reports, 100.0]
    assert all("estimated_remaining_seconds" in f["task"] for f in live)
    # ...but the inbox holds ONE progress notification, sent on the socket once, rewritten in
    # place with the newest figures, and read now that the task has ended.
    progress_frames = [
        f
        for f in _of_kind(frames, "notification")
        if f["notification"]["notification_type"] == "progress"
    ]
    assert [f["notification"]["id"] for f in progress_frames] == [str(first.id)]
    progress_rows = [
        n for n in await _notifications(service, task_id) if n.notification_type == "progress"
    ]
    assert [n.id for n in progress_rows] == [first.id]
    assert progress_rows[0].notification_metadata["status"] == "completed"
    assert progress_rows[0].is_read
    body = await wait_for_status(service, str(success["id"]), "websocket", "delivered")
    assert body["status"] == "delivered" and body["related_task_id"] == task_id


async def test_failure_between_event_and_notification_leaves_neither(
    service: RunningService,
) -> None:
    """The PATCH stores the status change and its notification in one transaction. A database
    refusal of the notification row (here: a row that already holds its dedupe key, planted
    beforehand) must leave the task as it was and no new notification."""
    user, task_id = _ids()
    async with service.client() as client:
        await client.post(
            "/v1/tasks", json={"task_id": task_id, "user_id": user, "task_type": "sync"}
        )
        started = (await client.patch(f"/v1/tasks/{task_id}", json={"status": "running"})).json()
        async with service.context.sessions() as session, session.begin():
            session.add(
                Notification.build(
                    user_id="someone-else",
                    title="planted",
                    message="holds the dedupe key",
                    dedupe_key=f"task:{task_key(task_id)}:completed:{_iso(started['started_at'])}",
                )
            )
        before = await _notifications(service, task_id)
        refused = await client.patch(f"/v1/tasks/{task_id}", json={"status": "completed"})
    assert refused.status_code >= 400
    assert set(refused.json()) == {"error"} and "Traceback" not in refused.text
    async with service.context.sessions() as session:
        task = (
            await session.execute(select(TaskProgress).where(TaskProgress.task_id == task_id))
        ).scalar_one()
        count = await session.scalar(
            select(func.count()).where(Notification.related_task_id == task_id)
        )
    assert task.status == "running" and task.completed_at is None
    assert count == len(before)


async def test_metrics_show_what_the_run_caused(
    service: RunningService, dispatcher: Dispatcher
) -> None:
    user, task_id = _ids()
    token = await service.user_token(user)
    async with service.client() as client:
        before = (await client.get("/metrics")).text
        async with websockets.connect(ws_url(service, token)) as socket:
            ids = []
            for i in range(3):
                # A send_at keeps them off the websocket fast path: these are the worker's
                # metrics (docs/architecture.md, "WebSocket fast path").
                send_at = datetime.now(UTC).isoformat()
                body = {"user_id": user, "title": f"m{i}", "message": "x", "send_at": send_at}
                created = await client.post("/v1/notifications", json=body)
                ids.append(created.json()["id"])
            for _ in ids:
                await next_frame(socket, "notification")
            for notification_id in ids:
                await wait_for_status(service, notification_id, "websocket", "sent")
            during = (await client.get("/metrics")).text
        await client.post("/v1/tasks", json={"task_id": task_id, "user_id": user, "task_type": "t"})
        await client.patch(f"/v1/tasks/{task_id}", json={"progress": 42.0})

    sent = "notifier_deliveries_total"
    delta = _sample(during, sent, channel="websocket", outcome="sent") - _sample(
        before, sent, channel="websocket", outcome="sent"
    )
    assert delta >= 3  # other tests' dispatches may add to it, never subtract
    assert _sample(during, "notifier_websocket_connections") >= 1
    assert _sample(during, "notifier_dispatch_latency_seconds_count", channel="websocket") >= 3
    claimed = "notifier_claim_wait_seconds_count"
    assert _sample(during, claimed) - _sample(before, claimed) >= 3
    assert any(f.name == "notifier_queue_depth" for f in text_string_to_metric_families(during))

    # The ProgressMetric rows (written in batches off the hot path) read back aggregated.
    assert service.context.recorder is not None
    await service.context.recorder.flush()
    async with service.client() as client:
        latency = await client.get(
            "/v1/metrics", params={"name": "delivery_latency", "label": "channel:websocket"}
        )
        progress = await client.get(
            "/v1/metrics", params={"name": "task_progress", "task_id": task_id}
        )
    assert latency.status_code == 200, latency.text
    summary = latency.json()
    assert summary["count"] >= 1 and summary["unit"] == "ms"
    assert summary["min"] <= summary["avg"] <= summary["max"] and summary["p95"] <= summary["max"]
    assert progress.json()["count"] == 1 and progress.json()["max"] == 42.0
