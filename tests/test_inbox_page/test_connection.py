"""The page's socket under trouble: a lost ack (the worker's republished copy shows no second
item) and a server restart (the page reconnects and live frames flow again)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, WebSocketRoute, expect

from tests.support.databases import sqlite_url
from tests.support.service import RunningService, make_settings, migrate, running_service
from tests.support.worker import dispatcher_beside
from tests.test_inbox_page.browser import Inbox, inbox_url, open_inbox

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
async def graced_service(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningService]:
    """A service whose unacked frames the worker republishes after one second (the websocket
    fast path's grace), with its worker. On SQLite a database of its own: a worker there
    publishes to its own process's sockets only, so another service's worker must not claim
    these rows."""
    if database_url.startswith("sqlite"):
        database_url = sqlite_url(Path(tmp_path_factory.mktemp("graced")))
        await migrate(database_url)
    settings = make_settings(database_url, websocket_grace_seconds=1)
    async with running_service(settings) as running, dispatcher_beside(running):
        if running.context.listener is not None:
            await asyncio.wait_for(running.context.listener.listening.wait(), 10)
        yield running


async def test_a_republished_frame_shows_no_duplicate_item(
    graced_service: RunningService, browser: Browser
) -> None:
    """The page's first ack is lost on its way (a stand-in for a flaky network, through
    Playwright's WebSocket routing): the worker republishes the frame after the grace, the page
    gets the same notification twice, shows it once, and its ack of the copy delivers it."""
    user = f"web-{uuid.uuid4().hex[:8]}"
    token = await graced_service.user_token(user)
    context = await browser.new_context(viewport={"width": 760, "height": 600})
    page = await context.new_page()
    inbox = Inbox(graced_service, user, page, token)
    frames: list[str] = []  # the notification frames the server sent the page, by id
    lost: set[str] = set()

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            data = json.loads(message)
            if data.get("type") == "ack" and data["id"] not in lost:
                lost.add(data["id"])  # the first ack of each notification never arrives
                return
            server.send(message)

        def to_page(message: str | bytes) -> None:
            data = json.loads(message)
            if data.get("type") == "notification":
                frames.append(data["notification"]["id"])
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    await page.route_web_socket(re.compile(r".*/v1/ws.*"), route)
    try:
        await page.goto(inbox_url(graced_service, token, user))
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        created = await inbox.notify("Once only")
        await expect(inbox.item(created["id"])).to_have_count(1)
        # Delivered only by the ack of the worker's copy: the republish reached the page.
        await inbox.wait_for_channel(created["id"], "delivered")
        assert frames.count(created["id"]) == 2
        await expect(inbox.item(created["id"])).to_have_count(1)
        await expect(page.locator("#notifications li")).to_have_count(1)
        await expect(inbox.badge()).to_have_text("1")
    finally:
        await context.close()


async def test_socket_reconnects_after_the_server_restarts(
    database_url: str, browser: Browser
) -> None:
    settings = make_settings(database_url)
    user, task_id = f"web-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    async with running_service(settings) as service:
        inbox, context = await open_inbox(service, browser, user)
        await inbox.api(
            "POST", "/v1/tasks", json={"task_id": task_id, "user_id": user, "task_type": "x"}
        )
    try:
        # The server is gone: the page notices and keeps trying, with backoff.
        await expect(inbox.page.locator("#connection")).to_have_attribute(
            "data-state", "reconnecting"
        )
        async with running_service(settings) as service:
            if service.context.listener is not None:
                await asyncio.wait_for(service.context.listener.listening.wait(), 10)
            inbox.service = service
            await expect(inbox.page.locator("#connection")).to_have_attribute(
                "data-state", "live", timeout=20_000
            )
            # Live frames flow again on the new socket.
            await inbox.api(
                "PATCH", f"/v1/tasks/{task_id}", json={"status": "running", "progress": 40}
            )
            await expect(inbox.task_bar(task_id)).to_have_attribute("value", "40")
    finally:
        await context.close()
    # Only the failed connection attempts while the server was down may be logged.
    assert all("WebSocket" in e or "ERR_CONNECTION_REFUSED" in e for e in inbox.console_errors)
