"""``/docs`` works with no network: Swagger UI's files come from the package, not a CDN.

Chromium (Debian's, through Playwright) opens the page with every request to anywhere but the
service refused, and sees the API's operations listed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Request, Route, async_playwright, expect

from notifier.api.docs import VENDOR_DIR
from tests.support.service import RunningService, make_settings, running_service
from tests.test_inbox_page.browser import CHROMIUM, CHROMIUM_ARGS, chromium_installed


@pytest.fixture(scope="module")
async def docs_service(sqlite_db_url: str) -> AsyncIterator[RunningService]:
    async with running_service(make_settings(sqlite_db_url)) as running:
        yield running


async def test_docs_page_uses_only_its_own_assets(docs_service: RunningService) -> None:
    async with docs_service.client() as client:
        page = await client.get("/docs")
        script = await client.get("/docs/assets/swagger-ui-bundle.js")
        style = await client.get("/docs/assets/swagger-ui.css")
        missing = await client.get("/docs/assets/swagger-ui.js.map")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for url in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert url in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert script.status_code == 200, script.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # Shipped with their licence.
    assert {"LICENSE", "NOTICE"} <= {p.name for p in VENDOR_DIR.iterdir()}


@pytest.mark.browser
async def test_docs_page_lists_the_operations_with_no_network(
    docs_service: RunningService,
) -> None:
    if not chromium_installed():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    ours = urlsplit(docs_service.base_url).netloc
    refused: list[str] = []

    async def only_the_service(route: Route, request: Request) -> None:
        if urlsplit(request.url).netloc == ours:
            await route.continue_()
        else:
            refused.append(request.url)
            await route.abort("internetdisconnected")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            await page.route("**/*", only_the_service)
            await page.goto(f"{docs_service.base_url}/docs")
            operations = page.locator(".opblock")
            await expect(operations.first).to_be_visible(timeout=15_000)
            shown = {
                (
                    await o.locator(".opblock-summary-method").inner_text(),
                    await o.locator(".opblock-summary-path").inner_text(),
                )
                for o in await operations.all()
            }
            documented = {
                (method.upper(), path)
                for path, methods in docs_service.app.openapi()["paths"].items()
                for method in methods
            }
            assert shown == documented
        finally:
            await browser.close()
    assert refused == [], refused
