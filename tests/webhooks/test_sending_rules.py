"""How the sender treats receivers: redirects are not followed, a receiver that does not answer
times out and is retried, an address that is not public is refused at send time (no connection
made), a slow endpoint does not hold up another endpoint's deliveries, and the log is pruned."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from notifier.models.base import utcnow
from notifier.models.webhook import WebhookAttempt, WebhookDelivery, WebhookEvent
from notifier.net_guard import not_allowed
from notifier.webhooks.events import task_ended
from tests.peers.webhook import WebhookReceiver, WebhookReply
from tests.webhooks.harness import WebhookStack, webhook_stack

# The log says the address is not allowed, never what the name resolved to (no DNS probe).
NOT_ALLOWED = not_allowed("webhook URL")


async def test_a_redirect_is_a_failure_and_never_followed(
    db_url: str, receiver: WebhookReceiver
) -> None:
    receiver.script("/moved", WebhookReply(302, headers={"Location": receiver.url("/landing")}))
    async with webhook_stack(db_url) as hooks, hooks.sender():
        endpoint = await hooks.create_endpoint(receiver.url("/moved"))
        event_id = await hooks.send_test(endpoint["id"])
        attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 2)

    assert [(a["status_code"], a["attempt"]) for a in attempts] == [(302, 1), (200, 2)]
    assert attempts[0]["error"].startswith("HTTP 302: redirect not followed")
    assert receiver.on("/landing") == []
    assert [r.id for r in receiver.on("/moved")] == [event_id, event_id]


async def test_a_receiver_that_does_not_answer_times_out_and_is_retried(
    db_url: str, receiver: WebhookReceiver
) -> None:
    never = asyncio.Event()  # the first request is never answered (until the receiver stops)
    receiver.script("/hook", WebhookReply(hold=never))
    async with webhook_stack(db_url) as hooks, hooks.sender(webhook_timeout_seconds=0.3):
        endpoint = await hooks.create_endpoint(receiver.url("/hook"))
        event_id = await hooks.send_test(endpoint["id"])
        attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 2)
        # The sender hung up on the first request: the receiver's handler saw it go.
        await receiver.wait_until(lambda: receiver.holding == 0)

    first, second = attempts
    assert (first["status_code"], first["error"]) == (None, "timeout: no answer within 0.3 s")
    assert 300 <= first["duration_ms"] < 2000
    assert (second["status_code"], second["error"]) == (200, None)
    assert [r.id for r in receiver.requests] == [event_id, event_id]


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_send_time(
    db_url: str, receiver: WebhookReceiver
) -> None:
    # Registered while private addresses were allowed (as push tests DNS rebinding: a name that
    # resolves to loopback when the worker sends); the sender does not allow them.
    by_name = f"http://localhost:{receiver.port}/by-name"
    literal = f"http://127.0.0.1:{receiver.port}/literal"
    async with webhook_stack(db_url) as hooks:
        endpoints = [await hooks.create_endpoint(url) for url in (by_name, literal)]
        async with hooks.sender(webhook_allow_private_endpoints=False):
            for endpoint in endpoints:
                await hooks.send_test(endpoint["id"])
            logs = [await hooks.wait_attempts(e["id"], lambda a: len(a) >= 2) for e in endpoints]
        rows = [await hooks.delivery_rows(e["id"]) for e in endpoints]

    for attempts in logs:
        assert all(a["status_code"] is None for a in attempts), attempts
        assert all(a["error"] == f"refused: {NOT_ALLOWED}" for a in attempts), attempts
    assert all(row[0][0] == "retrying" for row in rows), rows
    assert receiver.connections == 0
    assert receiver.requests == []


async def test_a_slow_endpoint_does_not_hold_up_another(
    db_url: str, receiver: WebhookReceiver
) -> None:
    release = asyncio.Event()
    receiver.script("/slow", *[WebhookReply(hold=release)] * 6)
    async with (
        webhook_stack(db_url) as hooks,
        hooks.sender(webhook_concurrency_per_endpoint=2, webhook_worker_concurrency=4),
    ):
        slow = await hooks.create_endpoint(receiver.url("/slow"), ["task.failed"])
        fast = await hooks.create_endpoint(receiver.url("/fast"), ["task.completed"])
        await hooks.emit(*[task_ended("failed", {"task_id": f"s{n}"}) for n in range(6)])
        await receiver.wait_until(lambda: receiver.holding == 2)
        await hooks.emit(*[task_ended("completed", {"task_id": f"f{n}"}) for n in range(6)])
        # All of the fast endpoint's events arrive while the slow one still holds its two.
        await receiver.wait_for(6, path="/fast")
        slow_while_fast = len(receiver.on("/slow"))
        holding_while_fast = receiver.holding
        release.set()
        await receiver.wait_for(6, path="/slow")
        await hooks.wait_attempts(slow["id"], lambda a: len(a) == 6)
        fast_attempts = await hooks.wait_attempts(fast["id"], lambda a: len(a) == 6)

    assert (slow_while_fast, holding_while_fast) == (2, 2)  # never more than its bound
    assert all(a["status_code"] == 200 for a in fast_attempts)


async def test_old_log_entries_and_settled_events_are_pruned(
    db_url: str, receiver: WebhookReceiver
) -> None:
    async with webhook_stack(db_url) as hooks:
        endpoint = await hooks.create_endpoint(receiver.url())
        async with hooks.sender():
            old = await hooks.send_test(endpoint["id"])
            await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 1)
            recent = await hooks.send_test(endpoint["id"])
            await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 2)
        # An old event whose delivery is still waiting: kept, whatever its age.
        waiting = task_ended("failed", {"task_id": "still-due"})
        await hooks.emit(waiting)
        eight_days_ago = utcnow() - timedelta(days=8)
        async with hooks.stack.service.context.engine.begin() as connection:
            for event_id in (old, str(waiting.id)):
                ident = uuid.UUID(event_id)
                await connection.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id == ident)
                    .values(created_at=eight_days_ago)
                )
                await connection.execute(
                    update(WebhookAttempt)
                    .where(WebhookAttempt.event_id == ident)
                    .values(at=eight_days_ago)
                )
                await connection.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.event_id == ident)
                    .values(
                        updated_at=eight_days_ago,
                        next_attempt_at=(
                            utcnow() + timedelta(hours=1) if ident == waiting.id else None
                        ),
                    )
                )
        # A sender prunes when it starts (and hourly): entries older than WEBHOOK_LOG_DAYS.
        async with hooks.sender():
            events = await _wait_for_rows(hooks, "SELECT id FROM webhook_events", 2)
        attempts = await hooks.attempts(endpoint["id"])

    assert {str(uuid.UUID(str(row[0]))) for row in events} == {recent, str(waiting.id)}
    assert [a["event_id"] for a in attempts] == [recent]


async def _wait_for_rows(hooks: WebhookStack, query: str, count: int) -> list[Any]:
    """Poll the table (pruning has no event to await) until it holds ``count`` rows."""
    async with asyncio.timeout(10):
        while True:
            rows = await hooks.stack.sql(query)
            if len(rows) == count:
                return rows
            await asyncio.sleep(0.05)
