"""Task progress bars on the page: from the initial list and live, until the task completes or
fails."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.async_api import expect

from tests.test_inbox_page.browser import Inbox

pytestmark = pytest.mark.browser


async def test_task_progress_bars_follow_the_task(inbox: Inbox) -> None:
    running_id, live_id = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    # A task that was already running before the page opened comes from the initial list.
    await inbox.api(
        "POST", "/v1/tasks", json={"task_id": running_id, "user_id": inbox.user, "task_type": "a"}
    )
    await inbox.api("PATCH", f"/v1/tasks/{running_id}", json={"status": "running", "progress": 5})
    await inbox.page.reload()
    await expect(inbox.page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(inbox.task_bar(running_id)).to_have_attribute("value", "5")

    await inbox.api(
        "POST",
        "/v1/tasks",
        json={"task_id": live_id, "user_id": inbox.user, "task_type": "export"},
    )
    await inbox.api("PATCH", f"/v1/tasks/{live_id}", json={"status": "running"})
    bar = inbox.task_bar(live_id)
    await expect(bar).to_have_attribute("value", "0")
    await inbox.api(
        "PATCH", f"/v1/tasks/{live_id}", json={"progress": 30, "current_step": "reading"}
    )
    await expect(bar).to_have_attribute("value", "30")
    step = inbox.page.locator(f'#tasks li[data-task-id="{live_id}"] .step')
    await expect(step).to_contain_text("reading")
    await inbox.api("PATCH", f"/v1/tasks/{live_id}", json={"progress": 70})
    await expect(bar).to_have_attribute("value", "70")
    assert await bar.evaluate("el => el.value") == 70

    # Completed: the bar fills, then goes away; the success notification arrives live.
    await inbox.api("PATCH", f"/v1/tasks/{live_id}", json={"status": "completed"})
    await expect(bar).to_have_count(0)
    success = inbox.page.locator("#notifications li.type-success")
    await expect(success).to_have_count(1)
    # Failed: the other bar goes away too, and an error notification arrives.
    await inbox.api(
        "PATCH", f"/v1/tasks/{running_id}", json={"status": "failed", "error_message": "disk full"}
    )
    failed = inbox.page.locator(f'#tasks li[data-task-id="{running_id}"]')
    await expect(failed).to_have_class(re.compile(r"\bfailed\b"))
    await expect(failed.locator(".step")).to_have_text("disk full")
    await expect(failed).to_have_count(0)
    await expect(inbox.page.locator("#tasks-section")).to_be_hidden()
    await expect(inbox.page.locator("#notifications li.type-error")).to_have_count(1)
