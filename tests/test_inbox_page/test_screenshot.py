"""The README's screenshot of the inbox page (docs/inbox.png), taken from a page with a task
running and a few notifications of each kind."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.support.service import RunningService
from tests.test_inbox_page.browser import open_inbox
from workers.dispatcher import Dispatcher

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "inbox.png"

pytestmark = pytest.mark.browser


async def test_screenshot(
    inbox_service: RunningService, dispatcher: Dispatcher, browser: Browser
) -> None:
    user = f"web-{uuid.uuid4().hex[:8]}"
    inbox, context = await open_inbox(inbox_service, browser, user)
    try:
        await inbox.api(
            "POST",
            "/v1/tasks",
            json={"task_id": f"{user}-e", "user_id": user, "task_type": "export"},
        )
        await inbox.api(
            "PATCH",
            f"/v1/tasks/{user}-e",
            json={"status": "running", "progress": 70, "current_step": "writing rows"},
        )
        examples = [
            ("Nightly backup finished", "4.2 GB in 3 min", "success", "normal", None),
            ("Disk usage at 85%", "Volume /data is filling up.", "warning", "high", None),
            ("Import failed", "Row 7: malformed date '31/02'.", "error", "urgent", None),
            (
                "New comment on PR #214",
                "Ada: looks good to me!",
                "info",
                "normal",
                "https://example.com/pr/214",
            ),
        ]
        first = None
        for title, message, kind, priority, url in examples:
            created = await inbox.notify(
                title, message, notification_type=kind, priority=priority, action_url=url
            )
            first = first or created
            await expect(inbox.item(created["id"])).to_have_count(1)
        assert first is not None
        await expect(inbox.page.locator("#notifications li.type-progress")).to_have_count(1)
        await inbox.item(first["id"]).click()
        await expect(inbox.item(first["id"])).to_have_class(re.compile(r"\bread\b"))
        # The page shows the item read at once; the count to compare with is the server's once
        # the read is recorded.
        await inbox.wait_until_read(first["id"])
        await expect(inbox.badge()).to_have_text(str((await inbox.inbox())["unread_count"]))
        await expect(inbox.task_bar(f"{user}-e")).to_have_attribute("value", "70")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "inbox.png"
        # The whole page: the click above scrolled the first item into view, and a viewport's
        # worth would leave the header and the task bar out.
        await inbox.page.screenshot(path=str(shot), animations="disabled", full_page=True)
        assert shot.stat().st_size > 1000
        # The README's copy: written on the SQLite run when missing (or asked for), so that
        # every test run does not rewrite a committed file with new timestamps.
        if inbox_service.settings.is_sqlite and (
            not DOCS_SCREENSHOT.exists() or os.environ.get("NOTIFIER_UPDATE_SCREENSHOTS")
        ):
            DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOT)
    finally:
        await context.close()
