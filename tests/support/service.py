"""A real notifier API (uvicorn on a loopback port) running inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from notifier.api.context import ServiceContext
from notifier.settings import Settings
from notifier.storage.db import create_engine
from notifier.storage.migrate import upgrade_to_head
from runtime.roles import api_role


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "api_keys": "test-key-1-0123456789,test-key-2-0123456789",
        "token_secret": secrets.token_urlsafe(32),
        "host": "127.0.0.1",
        "port": free_port(),
        "log_level": "warning",
        # Suites fire requests as fast as they can, every one from 127.0.0.1, and refuse bad
        # credentials on purpose; the limiters have their own tests.
        "rate_limit_key_per_second": 0,
        "rate_limit_recipient_per_minute": 0,
        "rate_limit_user_per_second": 0,
        "rate_limit_auth_failures_per_minute": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class RunningService:
    settings: Settings
    context: ServiceContext
    app: FastAPI
    base_url: str
    api_key: str = "test-key-1-0123456789"

    def client(self, token: str | None = None, **kwargs: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.api_key}"}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    async def user_token(self, user_id: str) -> str:
        async with self.client() as client:
            response = await client.post(f"/v1/users/{user_id}/tokens")
            response.raise_for_status()
            return str(response.json()["token"])


async def migrate(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[RunningService]:
    """Serve the app on ``settings.port`` until the block ends."""
    api = api_role(settings)  # wired as `notifier serve` wires it, with its limits and options
    context, app, server = api.context, api.app, api.server
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)  # uvicorn offers no start event; this polls its flag
    try:
        yield RunningService(settings, context, app, f"http://{settings.host}:{settings.port}")
    finally:
        server.should_exit = True
        await task
        await context.aclose()
