"""The inbox page's preferences panel in Chromium (Playwright), on both databases: it shows the
user's preferences (an unsubscribe from an email included), and a click changes them through
the API with the user's own token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, async_playwright, expect

from notifier.unsubscribe import sign
from tests.support.service import RunningService

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"


def chromium_installed() -> bool:
    return Path(CHROMIUM).exists()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not chromium_installed():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--disable-gpu", "--no-first-run"]
        )
        yield browser
        await browser.close()


async def preferences(service: RunningService, user: str) -> dict[str, object]:
    async with service.client() as client:
        response = await client.get(f"/v1/users/{user}/preferences")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_panel_shows_and_changes_the_users_preferences(
    service: RunningService, browser: Browser
) -> None:
    user = f"web-{uuid.uuid4().hex[:8]}"
    secret = service.settings.token_secret
    assert secret is not None
    # Unsubscribed from warning emails by an email's link, before the page opens.
    async with httpx.AsyncClient(base_url=service.base_url) as anonymous:
        token_link = sign(secret.get_secret_value(), user, "warning")
        response = await anonymous.post(f"/v1/unsubscribe/{token_link}")
        assert response.status_code == 200, response.text
    token = await service.user_token(user)
    context = await browser.new_context()
    errors: list[str] = []
    page = await context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # a CSP violation, a script error
            errors.append(message.text)

    page.on("console", on_console)
    try:
        await page.goto(f"{service.base_url}/inbox#" + urlencode({"token": token, "user": user}))
        await expect(page.locator("#preferences")).to_be_visible()
        await page.get_by_text("Preferences").click()
        warning = page.locator("#pref-email-warning")
        await expect(warning).not_to_be_checked()  # the unsubscribe shows
        await expect(page.locator("#pref-email-info")).to_be_checked()
        await expect(page.locator("#pref-channel-sms")).to_be_checked()

        await page.locator("#pref-channel-sms").uncheck()
        await expect(page.locator("#status")).to_have_text("Preferences saved.")
        await warning.check()  # email for warnings back on
        await expect(page.locator("#pref-email-warning")).to_be_checked()
        await expect(page.locator("#pref-email-warning")).to_be_enabled()
        stored = await preferences(service, user)
        assert stored["channels"] == {"sms": False}
        assert stored["types"] == {}

        await page.reload()
        await page.get_by_text("Preferences").click()
        await expect(page.locator("#pref-channel-sms")).not_to_be_checked()
        await expect(page.locator("#pref-email-warning")).to_be_checked()
    finally:
        await context.close()
    assert errors == []
