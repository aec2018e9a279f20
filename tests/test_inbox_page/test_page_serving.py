"""The page and its assets as the server sends them: a strict Content-Security-Policy, no inline
script, no HTML built from strings."""

from __future__ import annotations

import pytest

from tests.support.service import RunningService

pytestmark = pytest.mark.browser


async def test_page_and_assets_are_served_with_a_strict_policy(
    inbox_service: RunningService,
) -> None:
    async with inbox_service.client() as client:
        page = await client.get("/inbox")
        script = await client.get("/inbox/inbox.js")
        worker = await client.get("/inbox/sw.js")
        missing = await client.get("/inbox/../settings.py")
        other = await client.get("/inbox/inbox.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    host = f"{inbox_service.settings.host}:{inbox_service.settings.port}"
    assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert "unsafe" not in policy
    assert "<script>" not in page.text and 'src="/inbox/inbox.js"' in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert ".innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    assert worker.headers["service-worker-allowed"] == "/inbox"
    assert missing.status_code == 404 and other.status_code == 404
