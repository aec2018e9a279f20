"""The notification list as a user sees it: live items, the unread badge, acks, marking read,
priority markers, text that stays text, and what loading the page counts as seen."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest
from playwright.async_api import Browser, Route, expect

from tests.support.service import RunningService
from tests.test_inbox_page.browser import XSS_TITLE, Inbox, Producer, inbox_url, open_inbox
from workers.dispatcher import Dispatcher

pytestmark = pytest.mark.browser


async def test_live_notification_badge_ack_and_mark_read(inbox: Inbox) -> None:
    await expect(inbox.badge()).to_have_text("0")
    created = await inbox.notify(
        "Build finished",
        "main is green",
        action_url="https://ci.example.com/builds/42",
    )
    item = inbox.item(created["id"])
    await expect(item).to_have_count(1)
    await expect(item.locator(".title")).to_have_text("Build finished")
    await expect(item).to_have_class(re.compile(r"\bunread\b"))
    await expect(inbox.badge()).to_have_text("1")
    link = item.locator("a.action")
    await expect(link).to_have_attribute("href", "https://ci.example.com/builds/42")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    # The page acked the frame: the websocket channel is delivered.
    await inbox.wait_for_channel(created["id"], "delivered")

    await item.locator(".title").click()
    await expect(inbox.badge()).to_have_text("0")
    await expect(item).to_have_class(re.compile(r"\bread\b"))
    # The page shows it read at once (optimistic); the server has it once the POST is through.
    await inbox.wait_until_read(created["id"])
    stored = await inbox.api("GET", f"/v1/notifications/{created['id']}")
    assert stored["is_read"] is True and stored["read_at"] is not None
    assert (await inbox.inbox())["unread_count"] == 0
    await expect(inbox.page.locator("#notifications li")).to_have_count(1)


async def test_xss_title_renders_as_text(inbox: Inbox) -> None:
    created = await inbox.notify(XSS_TITLE, "<script>window.__xss=2</script><b>bold?</b>")
    item = inbox.item(created["id"])
    await expect(item.locator(".title")).to_have_text(XSS_TITLE)
    await expect(item.locator(".message")).to_have_text(
        "<script>window.__xss=2</script><b>bold?</b>"
    )
    await expect(inbox.page.locator("#notifications img, #notifications script")).to_have_count(0)
    await expect(item.locator("a")).to_have_count(0)  # no action_url, no link
    assert await inbox.page.evaluate("typeof window.__xss") == "undefined"


async def test_urgent_and_high_notifications_are_marked_in_words(inbox: Inbox) -> None:
    urgent = await inbox.notify("Server down", "db-1 unreachable", priority="urgent")
    high = await inbox.notify("Quota at 95%", "almost full", priority="high")
    normal = await inbox.notify("Weekly digest", "3 new items", priority="normal")
    low = await inbox.notify("Tip", "did you know", priority="low")
    # Text, not colour alone: the marker is words, and the item's accessible name says it too.
    await expect(inbox.item(urgent["id"]).locator(".priority")).to_have_text("Urgent")
    await expect(inbox.item(urgent["id"])).to_have_attribute(
        "aria-label", "Unread: Urgent: Server down"
    )
    await expect(inbox.item(high["id"]).locator(".priority")).to_have_text("High priority")
    await expect(inbox.item(high["id"])).to_have_class(re.compile(r"\bpriority-high\b"))
    for plain in (normal, low):
        await expect(inbox.item(plain["id"])).to_have_count(1)
        await expect(inbox.item(plain["id"]).locator(".priority")).to_have_count(0)
    # The same markers on a fresh load of the page (from the inbox API, not a live frame).
    await inbox.page.reload()
    await expect(inbox.item(urgent["id"]).locator(".priority")).to_have_text("Urgent")
    await expect(inbox.item(high["id"]).locator(".priority")).to_have_text("High priority")
    await expect(inbox.page.locator("#notifications .priority")).to_have_count(2)


async def test_the_page_says_it_is_loading_until_the_inbox_arrives(
    inbox_service: RunningService, browser: Browser
) -> None:
    user = f"web-{uuid.uuid4().hex[:8]}"
    await Producer(inbox_service, user).notify("Already here")
    token = await inbox_service.user_token(user)
    context = await browser.new_context()
    page = await context.new_page()
    held: asyncio.Queue[Route] = asyncio.Queue()
    # The inbox request is held in the browser (Playwright's request interception) until the
    # page has been looked at; the server behind it is the real one.
    await page.route(re.compile(r"/v1/users/[^/]+/notifications\?"), held.put_nowait)
    try:
        await page.goto(inbox_url(inbox_service, token, user))
        route = await asyncio.wait_for(held.get(), 10)
        await expect(page.locator("#loading")).to_be_visible()
        await expect(page.locator("#loading")).to_have_text("Loading notifications…")
        await expect(page.locator("#notifications")).to_have_attribute("aria-busy", "true")
        await expect(page.locator("#empty")).to_be_hidden()

        await route.continue_()
        await expect(page.locator("#notifications li .title")).to_have_text("Already here")
        await expect(page.locator("#loading")).to_be_hidden()
        await expect(page.locator("#notifications")).not_to_have_attribute("aria-busy", "true")
    finally:
        await context.close()


async def test_mark_all_read_and_replayed_frames_are_not_doubled(
    inbox_service: RunningService, dispatcher: Dispatcher, browser: Browser
) -> None:
    user = f"web-{uuid.uuid4().hex[:8]}"
    producer = Producer(inbox_service, user)
    created = [await producer.notify(f"Earlier {i}") for i in range(3)]
    # Published while no socket was open, never acked: the page gets each one twice, from the
    # inbox API and from the replay on connect.
    for n in created:
        await producer.wait_for_channel(n["id"], "sent")
    inbox, context = await open_inbox(inbox_service, browser, user)
    try:
        rows = inbox.page.locator("#notifications li")
        await expect(rows).to_have_count(3)
        await expect(inbox.badge()).to_have_text("3")
        titles = [await t.text_content() for t in await rows.locator(".title").all()]
        assert titles == ["Earlier 2", "Earlier 1", "Earlier 0"]  # newest first
        for n in created:  # the replayed copies were acked
            await inbox.wait_for_channel(n["id"], "delivered")

        await inbox.page.get_by_role("button", name="Mark all read").click()
        await expect(inbox.badge()).to_have_text("0")
        await expect(inbox.page.locator("#notifications li.unread")).to_have_count(0)
        body = await inbox.inbox()
        assert body["unread_count"] == 0 and all(n["is_read"] for n in body["items"])
        await expect(rows).to_have_count(3)
        assert inbox.console_errors == []
    finally:
        await context.close()


async def test_shown_items_are_marked_seen_and_their_escalation_skipped(
    inbox_service: RunningService, browser: Browser
) -> None:
    """A client without a socket frame for it (the notification is not on the websocket):
    loading the page shows it, so it is seen and the email step waiting on "seen" is skipped.
    """
    user = f"web-{uuid.uuid4().hex[:8]}"
    producer = Producer(inbox_service, user)
    step = {"after_seconds": 600, "channels": ["email"], "unless": "seen"}
    created = await producer.notify("Approve deploy", channels=["sms"], escalation=[step])
    inbox, context = await open_inbox(inbox_service, browser, user)
    try:
        await expect(inbox.item(created["id"])).to_have_count(1)
        body: dict[str, Any] = {}
        for _ in range(200):
            body = await producer.api("GET", f"/v1/notifications/{created['id']}")
            if body["delivery_status"]["email"]["status"] != "pending":
                break
            await asyncio.sleep(0.05)  # polling the public API: there is no event to await
    finally:
        await context.close()
    assert body["delivery_status"]["email"]["status"] == "skipped"
    assert body["delivery_status"]["email"]["last_error"] == "seen before escalation"
    assert body["is_read"] is False  # seen is not read
    assert inbox.console_errors == []
