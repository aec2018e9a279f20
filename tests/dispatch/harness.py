"""A service and a dispatcher wired together against one database, and bounded waits on what
the public API reports.

    async with running_stack(url, **smtp_peer.settings()) as stack:
        created = await stack.notify(user_id="u", title="t", message="m", channels=["email"])
        body = await stack.wait_until(created["id"], lambda n: n["status"] == "delivered")

``running_stack(..., worker=False)`` starts the API only; ``stack.worker(**overrides)`` starts
a dispatcher later (optionally with other settings), wired like the one of ``running_stack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text

from notifier.storage.wakeups import DISPATCH
from tests.support.service import RunningService, free_port, make_settings, running_service
from tests.support.worker import running_dispatcher
from workers.dispatcher import Dispatcher
from workers.wakeup import Wakeup

Body = dict[str, Any]

# Channel states after which a worker will not touch the channel again.
FINAL = frozenset({"sent", "delivered", "failed", "skipped", "expired", "cancelled", "digested"})
UNSETTLED = frozenset({"pending", "dispatching", "retrying"})


@dataclass
class Stack:
    service: RunningService
    api: httpx.AsyncClient
    dispatchers: list[Dispatcher] = field(default_factory=list)
    _exit: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def base_url(self) -> str:
        return self.service.base_url

    async def notify(self, **body: Any) -> Body:
        response = await self.api.post("/v1/notifications", json=body)
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def notify_batch(self, items: list[Body]) -> list[Body]:
        response = await self.api.post("/v1/notifications/batch", json={"notifications": items})
        assert response.status_code == 202, response.text
        return list(response.json()["notifications"])

    async def get(self, notification_id: str) -> Body:
        response = await self.api.get(f"/v1/notifications/{notification_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def put_recipient(self, user_id: str, **body: Any) -> Body:
        response = await self.api.put(f"/v1/users/{user_id}/recipient", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def get_recipient(self, user_id: str) -> Body:
        response = await self.api.get(f"/v1/users/{user_id}/recipient")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def wait_until(
        self, notification_id: str, predicate: Callable[[Body], bool], within: float = 10.0
    ) -> Body:
        """Poll the public API (there is no event to await) until ``predicate`` holds."""
        deadline = time.monotonic() + within
        while True:
            body = await self.get(notification_id)
            if predicate(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {within}s: {body}")
            await asyncio.sleep(0.05)

    async def wait_channel(
        self, notification_id: str, channel: str, *statuses: str, within: float = 10.0
    ) -> Body:
        return await self.wait_until(
            notification_id,
            lambda n: n["delivery_status"][channel]["status"] in statuses,
            within,
        )

    async def wait_settled(self, notification_id: str, within: float = 10.0) -> Body:
        """Until no channel waits for a worker any more and the worker has let go."""
        return await self.wait_until(
            notification_id,
            lambda n: (
                all(d["status"] in FINAL for d in n["delivery_status"].values())
                and n["status"] not in UNSETTLED
            ),
            within,
        )

    @contextlib.asynccontextmanager
    async def worker(self, **overrides: Any) -> AsyncIterator[Dispatcher]:
        """A dispatcher on this stack's database; ``overrides`` change its settings only."""
        settings = self.service.settings.model_copy(update=overrides)
        context = self.service.context
        wakeup = Wakeup()
        context.wakeups.subscribe(DISPATCH, wakeup.notify)
        fanout = context.fanout if settings.is_sqlite else None
        try:
            async with running_dispatcher(settings, fanout=fanout, wakeup=wakeup) as dispatcher:
                self.dispatchers.append(dispatcher)
                yield dispatcher
        finally:
            context.wakeups.unsubscribe(DISPATCH, wakeup.notify)

    async def start_worker(self, **overrides: Any) -> Dispatcher:
        """Like ``worker`` but stopped with the stack."""
        return await self._exit.enter_async_context(self.worker(**overrides))

    async def sql(self, statement: str, **params: Any) -> list[Any]:
        """Read the database directly (what the API does not show)."""
        async with self.service.context.engine.connect() as connection:
            return list((await connection.execute(text(statement), params)).all())


def stack_settings(database_url: str, **overrides: Any) -> dict[str, Any]:
    port = free_port()
    values: dict[str, Any] = {
        "port": port,
        "public_base_url": f"http://127.0.0.1:{port}",
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 1.0,
        "poll_interval_seconds": 0.5,
        "smtp_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return values


@contextlib.asynccontextmanager
async def running_stack(
    database_url: str, *, worker: bool = True, **overrides: Any
) -> AsyncIterator[Stack]:
    settings = make_settings(database_url, **stack_settings(database_url, **overrides))
    async with running_service(settings) as service:
        if service.context.listener is not None:
            await asyncio.wait_for(service.context.listener.listening.wait(), 10)
        async with service.client() as api:
            stack = Stack(service=service, api=api)
            async with stack._exit:
                if worker:
                    await stack.start_worker()
                yield stack
