"""Chromium, and the inbox page as a test drives it: a user's producer-side API calls and their
page, open in a browser context of its own."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.async_api import Browser, ConsoleMessage, Page, expect

from tests.support.service import RunningService

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS_TITLE = "<img src=x onerror=window.__xss=1>"

expect.set_options(timeout=10_000)


def chromium_installed() -> bool:
    return Path(CHROMIUM).exists()


@dataclass
class Producer:
    """The producer-side API calls a test makes for one user."""

    service: RunningService
    user: str

    async def notify(self, title: str, message: str = "", **fields: Any) -> dict[str, Any]:
        body = {"user_id": self.user, "title": title, "message": message or title, **fields}
        async with self.service.client() as client:
            response = await client.post("/v1/notifications", json=body)
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.service.client() as client:
            response = await client.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    async def inbox(self) -> dict[str, Any]:
        return dict(await self.api("GET", f"/v1/users/{self.user}/notifications"))

    async def wait_for_channel(self, notification_id: str, status: str) -> None:
        body: dict[str, Any] = {}
        for _ in range(200):
            body = await self.api("GET", f"/v1/notifications/{notification_id}")
            if body["delivery_status"]["websocket"]["status"] == status:
                return
            await asyncio.sleep(0.05)  # polling the public API: there is no event to await
        raise AssertionError(f"websocket never became {status}: {body}")

    async def wait_until_read(self, notification_id: str) -> None:
        body: dict[str, Any] = {}
        for _ in range(200):
            body = await self.api("GET", f"/v1/notifications/{notification_id}")
            if body["is_read"]:
                return
            await asyncio.sleep(0.05)  # polling the public API: there is no event to await
        raise AssertionError(f"never marked read: {body}")


@dataclass
class Inbox(Producer):
    """One user's inbox page, open in its own browser context."""

    page: Page
    token: str
    console_errors: list[str] = field(default_factory=list)

    def item(self, notification_id: str) -> Any:
        return self.page.locator(f'#notifications li[data-id="{notification_id}"]')

    def badge(self) -> Any:
        return self.page.locator("#badge")

    def task_bar(self, task_id: str) -> Any:
        return self.page.locator(f'#tasks li[data-task-id="{task_id}"] progress')


def inbox_url(service: RunningService, token: str, user: str) -> str:
    return f"{service.base_url}/inbox#" + urlencode({"token": token, "user": user})


async def open_inbox(
    service: RunningService, browser: Browser, user: str, *, init_script: str | None = None
) -> tuple[Inbox, Any]:
    token = await service.user_token(user)
    context = await browser.new_context(viewport={"width": 760, "height": 600})
    await context.grant_permissions(["notifications"], origin=service.base_url)
    if init_script:
        await context.add_init_script(init_script)
    page = await context.new_page()
    inbox = Inbox(service, user, page, token)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            inbox.console_errors.append(message.text)

    page.on("console", on_console)
    await page.goto(inbox_url(service, token, user))
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    return inbox, context
