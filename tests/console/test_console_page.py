"""The operator console (``GET /admin``) in a real browser: Debian's Chromium driven by
Playwright, against a real service, a real dispatcher delivering to a real SMTP peer (which
refuses ``nouser@`` with 550), and a real webhook sender posting to a receiver that answers 503.

The page is driven as an operator drives it (typing the key, clicking) and checked through the
DOM and the public API; DOM conditions are awaited with Playwright's ``expect``, never with
fixed sleeps. Runs on both databases (the per-test ``db_url``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.dispatch.harness import Stack
from tests.peers.smtp import SmtpPeer
from tests.peers.webhook import WebhookReceiver, WebhookReply
from tests.webhooks.harness import webhook_stack

pytestmark = pytest.mark.browser

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
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "console.png"
XSS_TITLE = "<img src=x onerror=window.__xss=1>"
# Records what the Content-Security-Policy blocked, for the test to read.
CSP_WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""

expect.set_options(timeout=15_000)


def chromium_installed() -> bool:
    return Path(CHROMIUM).exists()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not chromium_installed():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


async def open_console(stack: Stack, browser: Browser, key: str) -> tuple[Page, list[str]]:
    context = await browser.new_context(viewport={"width": 1280, "height": 1400})
    await context.add_init_script(CSP_WATCH)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = await page.goto(f"{stack.base_url}/admin")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    await page.fill("#key", key)
    await page.click("#sign-in")
    return page, errors


def card_total(page: Page, channel: str, series: str) -> Any:
    return page.locator(f'#channels .card[data-channel="{channel}"] [data-series="{series}"]')


async def test_a_wrong_key_shows_a_clear_message(db_url: str, browser: Browser) -> None:
    async with webhook_stack(db_url) as hooks:
        page, errors = await open_console(hooks.stack, browser, "not-a-key")
        await expect(page.locator("#login-error")).to_contain_text("refused (401")
        await expect(page.locator("#console")).to_be_hidden()
        assert await page.evaluate("sessionStorage.length") == 0
        # The right key then opens it.
        await page.fill("#key", hooks.stack.service.api_key)
        await page.click("#sign-in")
        await expect(page.locator("#console")).to_be_visible()
        await expect(page.locator("#login-error")).to_have_text("")
        # The key is entered once: a reload of the tab opens the console without asking.
        await page.reload()
        await expect(page.locator("#console")).to_be_visible()
        await expect(page.locator("#queue tbody tr")).to_have_count(4)
        # Signing out forgets it.
        await page.click("#sign-out")
        await expect(page.locator("#login")).to_be_visible()
        assert await page.evaluate("sessionStorage.length") == 0
        assert await page.evaluate("window.__csp") == []
        await page.context.close()
    # The refused key's 401 is the only error the browser logged.
    assert all("401" in e for e in errors), errors


async def test_console_shows_deliveries_and_retries_the_dead_letter(
    db_url: str, browser: Browser, smtp_peer: SmtpPeer
) -> None:
    async with (
        WebhookReceiver() as receiver,
        webhook_stack(db_url, **smtp_peer.settings()) as hooks,
        hooks.sender(),
    ):
        stack = hooks.stack
        await stack.start_worker()
        good, refused = f"ada-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
        await stack.put_recipient(good, email="ada@example.com")
        await stack.put_recipient(refused, email="nouser@example.com")
        created = [
            await stack.notify(user_id=good, title=f"Report {i}", message="m", channels=["email"])
            for i in range(3)
        ]
        failed = [
            await stack.notify(user_id=refused, title=title, message="m", channels=["email"])
            for title in ("Invoice overdue", XSS_TITLE)
        ]
        for n in created + failed:
            await stack.wait_settled(n["id"])
        # A webhook endpoint whose receiver refuses every attempt (503).
        receiver.script("/hook", *[WebhookReply(503)] * 8)
        endpoint = await hooks.create_endpoint(receiver.url("/hook"), description="billing")
        await hooks.send_test(endpoint["id"])
        await hooks.wait_attempts(endpoint["id"], lambda a: len(a) >= 2)
        response = await stack.api.put(
            "/v1/templates/welcome",
            json={"locales": {"en": {"title": "Hello {{ data.name }}", "message": "Welcome!"}}},
        )
        assert response.status_code == 201, response.text

        page, errors = await open_console(stack, browser, stack.service.api_key)
        await expect(page.locator("#console")).to_be_visible()

        # Charts and totals from what the worker did.
        await expect(card_total(page, "email", "delivered")).to_have_attribute("data-total", "3")
        await expect(card_total(page, "email", "failed")).to_have_attribute("data-total", "2")
        await expect(page.locator('#channels .card[data-channel="email"] canvas')).to_have_count(2)
        await expect(
            page.locator('#channels .card[data-channel="email"] .latency-now')
        ).to_contain_text(" ms")
        await expect(
            page.locator('#queue tr[data-channel="email"] [data-state="pending"]')
        ).to_have_text("0")

        # The dead letter: both failures, the producer's markup shown as text.
        dead = page.locator("#dead tbody tr")
        await expect(dead).to_have_count(2)
        await expect(dead.first.locator(".last-error")).to_contain_text("550")
        await expect(page.locator("#dead .title", has_text=XSS_TITLE)).to_have_count(1)
        assert await page.evaluate("typeof window.__xss") == "undefined"
        # Filters: by error text, by channel.
        await page.fill("#dead-error", "no such user")
        await expect(dead).to_have_count(2)
        await page.fill("#dead-error", "timeout")
        await expect(dead).to_have_count(0)
        await expect(page.locator("#dead-empty")).to_be_visible()
        await page.fill("#dead-error", "")
        await page.select_option("#dead-channel", "sms")
        await expect(dead).to_have_count(0)
        await page.select_option("#dead-channel", "")
        await expect(dead).to_have_count(2)

        # Webhook endpoints: the failures and the last error.
        hook_row = page.locator(f'#webhooks tr[data-id="{endpoint["id"]}"]')
        await expect(hook_row.locator(".rate")).to_have_text("100%")
        await expect(hook_row.locator(".last-error")).to_contain_text("503")

        # Templates: a live preview as the data is typed.
        await page.click('#templates button[data-key="welcome"]')
        await page.fill("#preview-data", '{"name": "<b>Ada</b>"}')
        await expect(page.locator('#preview-parts [data-part="title"]')).to_have_text(
            "Hello <b>Ada</b>"
        )
        await page.fill("#preview-data", "{}")
        await expect(page.locator("#preview-error")).to_contain_text("name")

        # The screenshot, with everything above on it.
        await page.fill("#preview-data", '{"name": "Ada"}')
        await expect(page.locator('#preview-parts [data-part="title"]')).to_have_text("Hello Ada")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"console-{'sqlite' if stack.service.settings.is_sqlite else 'pg'}.png"
        await page.screenshot(path=str(shot), full_page=True, animations="disabled")
        assert shot.stat().st_size > 10_000
        if stack.service.settings.is_sqlite and (
            not DOCS_SCREENSHOT.exists() or os.environ.get("NOTIFIER_UPDATE_SCREENSHOTS")
        ):
            shutil.copyfile(shot, DOCS_SCREENSHOT)

        # Retry one from the dead letter once the address is fixed: it is delivered, and it
        # leaves the dead letter and joins the delivered count.
        await stack.put_recipient(refused, email="bob@example.com")
        row = page.locator(f'#dead tr[data-id="{failed[0]["id"]}"]')
        await row.locator("button.retry").click()
        await expect(row.locator(".retry-note")).to_contain_text("retried")
        body = await stack.wait_settled(failed[0]["id"])
        assert body["delivery_status"]["email"]["status"] == "delivered"
        await expect(dead).to_have_count(1)
        await expect(card_total(page, "email", "delivered")).to_have_attribute("data-total", "4")
        assert {m.rcpt_tos[0] for m in smtp_peer.messages} == {"ada@example.com", "bob@example.com"}

        assert await page.evaluate("window.__csp") == []
        await page.context.close()
    # Only the preview refused for missing data (a 422) may be logged.
    assert all("422" in e for e in errors), errors


async def test_assets_are_served_under_the_policy(db_url: str) -> None:
    """Every asset the page loads comes from here, under the same policy; nothing else does."""
    async with webhook_stack(db_url) as hooks:
        api = hooks.stack.api
        page = await api.get("/admin", headers={"Authorization": ""})
        assets = {
            name: await api.get(f"/admin/{name}", headers={"Authorization": ""})
            for name in ("admin.js", "admin.css", "uPlot.iife.min.js", "uPlot.min.css")
        }
        missing = await api.get("/admin/LICENSE", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name, response in assets.items():
        assert response.status_code == 200, name
        assert (
            response.headers["content-security-policy"] == page.headers["content-security-policy"]
        )
        assert response.headers["x-content-type-options"] == "nosniff"
        assert f"/admin/{name}" in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    licence = ROOT / "notifier" / "api" / "static" / "vendor" / "uplot" / "LICENSE"
    assert "MIT" in licence.read_text()
