"""The API on a database of the test's own, a webhook sender beside it, and the calls and
bounded waits the webhook tests share.

    async with webhook_stack(db_url) as hooks, hooks.sender():
        endpoint = await hooks.create_endpoint(receiver.url())
        event_id = await hooks.send_test(endpoint["id"])
        await receiver.wait_for(1)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractResolver
from sqlalchemy import select

from notifier.models.webhook import WebhookDelivery
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.wakeups import WEBHOOKS
from notifier.storage.webhooks import emit_events
from notifier.webhooks.events import WebhookEvent
from tests.dispatch.harness import Stack, running_stack
from workers.wakeup import Wakeup
from workers.webhook_sender import WebhookSender, webhook_sender_running

Body = dict[str, Any]

# Short pauses, so that retries happen within a test's time.
WEBHOOK_SETTINGS: dict[str, Any] = {
    "webhook_allow_private_endpoints": True,  # the receiver is on loopback
    "webhook_retry_schedule": [0.1, 0.1, 0.1],
    "webhook_timeout_seconds": 5.0,
    "poll_interval_seconds": 0.2,
    "lease_seconds": 5.0,
}


@dataclass
class WebhookStack:
    stack: Stack

    @property
    def api(self) -> Any:
        return self.stack.api

    async def create_endpoint(self, url: str, events: Sequence[str] = ("*",), **body: Any) -> Body:
        response = await self.api.post(
            "/v1/webhook-endpoints", json={"url": url, "events": list(events), **body}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def endpoint(self, endpoint_id: str) -> Body:
        response = await self.api.get(f"/v1/webhook-endpoints/{endpoint_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def send_test(self, endpoint_id: str) -> str:
        response = await self.api.post(f"/v1/webhook-endpoints/{endpoint_id}/test")
        assert response.status_code == 202, response.text
        return str(response.json()["event_id"])

    async def attempts(self, endpoint_id: str) -> list[Body]:
        """The endpoint's deliveries log, oldest first."""
        response = await self.api.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")
        assert response.status_code == 200, response.text
        return list(reversed(response.json()["items"]))

    async def wait_attempts(
        self, endpoint_id: str, predicate: Callable[[list[Body]], bool], within: float = 10
    ) -> list[Body]:
        """Poll the deliveries log (the outcome is written after the receiver answered; there
        is no event to await for that write) until ``predicate`` holds."""
        deadline = time.monotonic() + within
        while True:
            attempts = await self.attempts(endpoint_id)
            if predicate(attempts):
                return attempts
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {within}s: {attempts}")
            await asyncio.sleep(0.05)

    async def delivery_rows(self, endpoint_id: str) -> list[Any]:
        """(status, attempts, next_attempt_at, lease_owner, last_status_code) of each of the
        endpoint's deliveries, oldest first: what the API does not show."""
        query = (
            select(
                WebhookDelivery.status,
                WebhookDelivery.attempts,
                WebhookDelivery.next_attempt_at,
                WebhookDelivery.lease_owner,
                WebhookDelivery.last_status_code,
            )
            .where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id))
            .order_by(WebhookDelivery.created_at)
        )
        async with self.stack.service.context.engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(query)]

    async def emit(self, *events: WebhookEvent) -> int:
        """Emit in a transaction of its own, committed; wake an in-process sender (SQLite)."""
        async with self.stack.service.context.engine.begin() as connection:
            created = await emit_events(connection, events)
        self.stack.service.context.wakeups.committed(WEBHOOKS)
        return created

    @contextlib.asynccontextmanager
    async def sender(
        self, *, resolver: AbstractResolver | None = None, **overrides: Any
    ) -> AsyncIterator[WebhookSender]:
        """A sender on this stack's database, with an engine of its own, woken like the one
        of `notifier run` (NOTIFY on PostgreSQL, the API's commits on SQLite)."""
        settings = self.stack.service.settings.model_copy(update=overrides)
        engine = create_engine(settings.database_url, pool_size=4)
        wakeup = Wakeup()
        context = self.stack.service.context
        context.wakeups.subscribe(WEBHOOKS, wakeup.notify)
        try:
            async with webhook_sender_running(
                settings, create_session_factory(engine), wakeup=wakeup, resolver=resolver
            ) as sender:
                yield sender
        finally:
            context.wakeups.unsubscribe(WEBHOOKS, wakeup.notify)
            await engine.dispose()


@contextlib.asynccontextmanager
async def webhook_stack(database_url: str, **overrides: Any) -> AsyncIterator[WebhookStack]:
    async with running_stack(database_url, worker=False, **(WEBHOOK_SETTINGS | overrides)) as s:
        yield WebhookStack(s)
