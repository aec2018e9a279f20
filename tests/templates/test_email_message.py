"""The email a notification becomes, as a real SMTP server (aiosmtpd, tests/peers) received it:
``multipart/alternative`` with text and HTML, the default layout or the template's
``email_html``, the one-click unsubscribe headers; the HTML read by a real parser (the
standard library's ``html.parser``) and looked at in Chromium (docs/email.png)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from notifier.channels.base import Destination
from notifier.channels.email import EmailChannel
from notifier.settings import Settings
from notifier.unsubscribe import sign, verify
from tests.channels import make_message
from tests.peers import SmtpPeer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SECRET = "unsubscribe-test-secret-0123456789abcdef"
TO = Destination(user_id="user-1", email="alice@example.com")


def chromium_installed() -> bool:
    return Path(CHROMIUM).exists()


class Tree(HTMLParser):
    """Every start tag with its attributes, the text, and whether the tags balance."""

    VOID = frozenset({"meta", "br", "img", "hr", "input", "link"})

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.unbalanced: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.unbalanced.append(tag)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


@pytest.fixture
async def channel(smtp_peer: SmtpPeer) -> AsyncIterator[EmailChannel]:
    settings = Settings(
        **smtp_peer.settings(smtp_timeout_seconds=2.0),
        token_secret=SECRET,
        public_url="https://notify.example.com/",
    )
    channel = EmailChannel(settings)
    yield channel
    await channel.aclose()


async def send(channel: EmailChannel, peer: SmtpPeer, **fields: Any) -> Any:
    message = make_message(**fields)
    await channel.send(message, TO)
    [mail] = await peer.wait_for_messages(1)
    return message, mail


async def test_the_default_layout_is_multipart_escaped_and_well_formed(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    hostile = '<script>alert("x")</script> & <img src=https://evil.example/p.png>'
    message, mail = await send(
        channel,
        smtp_peer,
        title=f"Deploy {hostile}",
        message=f"Line one\n{hostile}",
        notification_type="error",
    )
    received = mail.message
    assert received.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in received.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert mail.text.startswith(f"Deploy {hostile}\n\nLine one\n{hostile}\n")

    tree = Tree(mail.html)
    assert tree.unbalanced == [] and tree.open == []
    # The producer's text is text: no script, no image, no element it smuggled in.
    assert tree.named("script") == [] and tree.named("img") == []
    assert f"Deploy {hostile}" in tree.text and hostile in tree.text
    # The action URL is the one button; no remote resource is referenced anywhere.
    links = [attrs["href"] for attrs in tree.named("a")]
    assert links[0] == message.action_url
    assert not any(attrs.get("src") for _, attrs in tree.tags)
    assert "<link" not in mail.html and "url(" not in mail.html
    # Inline CSS only: the card's cells carry their own style.
    assert all("style" in attrs for attrs in tree.named("td"))


async def test_every_email_carries_a_one_click_unsubscribe_link(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    _, mail = await send(channel, smtp_peer, user_id="ann@example", notification_type="warning")
    header = mail.message["List-Unsubscribe"]
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    prefix = "<https://notify.example.com/v1/unsubscribe/"
    assert header.startswith(prefix) and header.endswith(">"), header
    token = header[len(prefix) : -1]
    target = verify(SECRET, token)
    assert (target.user_id, target.notification_type) == ("ann@example", "warning")
    assert token == sign(SECRET, "ann@example", "warning")
    # On one line on the wire, never RFC 2047 words that no client reads as a URL.
    assert f"List-Unsubscribe: {header}\r\n".encode() in mail.raw
    # The same link in both bodies, for readers whose client shows no unsubscribe button.
    assert header[1:-1] in mail.text
    assert header[1:-1] in [attrs["href"] for attrs in Tree(mail.html).named("a")]


async def test_the_templates_parts_are_the_subject_and_html(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    html = "<p>Order <b>A&amp;17</b> for &lt;Ann&gt;</p>"
    _, mail = await send(
        channel,
        smtp_peer,
        title="Hello",
        message="Order A&17 shipped.",
        parts={"email_subject": "Your order A&17 — shipped", "email_html": html},
    )
    assert mail.message["Subject"] == "Your order A&17 — shipped"
    assert mail.html.strip() == html  # as rendered (and escaped) at enqueue
    assert mail.text.startswith("Hello\n\nOrder A&17 shipped.\n")


async def test_the_default_layout_in_chromium(channel: EmailChannel, smtp_peer: SmtpPeer) -> None:
    """Renders in a real browser with nothing fetched from the network; the screenshot is
    docs/email.png."""
    if not chromium_installed():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    _, mail = await send(
        channel,
        smtp_peer,
        title="Nightly export completed",
        message="Task export-2291 completed in 4 min 12 s.\n12,408 rows were written.",
        notification_type="success",
        action_url="https://app.example.com/tasks/export-2291",
    )
    requests: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--disable-gpu", "--no-first-run"]
        )
        try:
            page = await browser.new_page(viewport={"width": 640, "height": 420})
            page.on("request", lambda request: requests.append(request.url))
            await page.set_content(mail.html, wait_until="load")
            heading = page.get_by_role("heading", name="Nightly export completed")
            assert await heading.is_visible()
            button = page.get_by_role("link", name="Open")
            assert await button.get_attribute("href") == "https://app.example.com/tasks/export-2291"
            box = await button.bounding_box()
            assert box is not None and box["width"] > 20 and box["height"] > 10
            assert await page.get_by_role("link", name="Unsubscribe").is_visible()
            await page.screenshot(path=str(ROOT / "docs" / "email.png"), full_page=True)
        finally:
            await browser.close()
    assert [url for url in requests if not url.startswith(("about:", "data:"))] == []
