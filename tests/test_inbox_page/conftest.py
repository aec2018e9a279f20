"""The inbox page's service (with Web Push configured), its dispatch worker, the browser, and a
user's page open in it. One service and one browser per database for the whole package."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from notifier.vapid import generate_private_key
from tests.support.service import RunningService, make_settings, running_service
from tests.support.worker import dispatcher_beside
from tests.test_inbox_page.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Inbox,
    chromium_installed,
    open_inbox,
)
from workers.dispatcher import Dispatcher


@pytest.fixture(scope="package")
async def inbox_service(database_url: str) -> AsyncIterator[RunningService]:
    """A service of its own, with Web Push configured (the page asks for the VAPID key)."""
    settings = make_settings(
        database_url,
        vapid_private_key=generate_private_key(),
        vapid_subject="mailto:inbox-test@example.com",
        push_allow_private_endpoints=True,  # the stand-in subscription points at loopback
    )
    async with running_service(settings) as running:
        if running.context.listener is not None:
            await asyncio.wait_for(running.context.listener.listening.wait(), 10)
        yield running


@pytest.fixture(scope="package")
async def dispatcher(inbox_service: RunningService) -> AsyncIterator[Dispatcher]:
    async with dispatcher_beside(inbox_service) as running:
        yield running


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Browser]:
    if not chromium_installed():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest.fixture
async def inbox(
    inbox_service: RunningService, dispatcher: Dispatcher, browser: Browser
) -> AsyncIterator[Inbox]:
    page, context = await open_inbox(inbox_service, browser, f"web-{uuid.uuid4().hex[:8]}")
    yield page
    await context.close()
    # Any CSP violation (inline script or style, a foreign connection) shows up here.
    assert page.console_errors == []
