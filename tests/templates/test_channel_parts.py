"""A notification enqueued by template, end to end: ``POST /v1/notifications`` → a real
dispatcher → the real peers (aiosmtpd, the Twilio-speaking server, a Web Push receiver); each
channel sends its own rendered part, and what goes out is what was rendered at enqueue, even
after the template changed."""

from __future__ import annotations

import uuid
from typing import Any

from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.peers import PushPeer, TwilioPeer

PARTS = {
    "title": "Order {{ data.order }} shipped",
    "message": "Hello {{ data.name }}, your order {{ data.order }} is on its way.",
    "email_subject": "Your order {{ data.order }} ({{ data.name }})",
    "email_html": "<p>Order <b>{{ data.order }}</b> for {{ data.name }}</p>",
    "sms": "{{ data.order }} shipped",
    "push_title": "Shipped: {{ data.order }}",
    "push_body": "Tap to track {{ data.order }}",
}


async def put_template(stack: Stack, key: str, **overrides: str) -> None:
    body = {"default_locale": "en", "locales": {"en": {**PARTS, **overrides}}}
    response = await stack.api.put(f"/v1/templates/{key}", json=body)
    assert response.status_code in (200, 201), response.text


async def test_each_channel_sends_its_own_part(
    db_url: str,
    smtp_peer: DispatchSmtpPeer,
    twilio_peer: TwilioPeer,
    push_peer: PushPeer,
    push_settings: dict[str, Any],
) -> None:
    user, key = f"u-{uuid.uuid4().hex[:8]}", f"order.{uuid.uuid4().hex[:8]}"
    settings = {**smtp_peer.settings(), **twilio_peer.settings(), **push_settings}
    async with running_stack(db_url, **settings) as stack:
        await stack.put_recipient(user, email="ann@example.com", phone="+15005550010")
        browser = push_peer.subscribe()
        response = await stack.api.post(
            f"/v1/users/{user}/push-subscriptions", json=browser.as_json()
        )
        assert response.status_code == 201, response.text
        await put_template(stack, key)
        created = await stack.notify(
            user_id=user,
            template=key,
            data={"name": "<Ann>", "order": "A&17"},
            channels=["email", "sms", "browser"],
        )
        nid = created["id"]
        assert created["title"] == "Order A&17 shipped"
        body = await stack.wait_settled(nid)
    assert {c: s["status"] for c, s in body["delivery_status"].items()} == {
        "email": "delivered",
        "sms": "sent",
        "browser": "sent",
    }
    [mail] = smtp_peer.messages
    assert mail.message["Subject"] == "Your order A&17 (<Ann>)"
    assert mail.html.strip() == "<p>Order <b>A&amp;17</b> for &lt;Ann&gt;</p>"
    assert "Hello <Ann>, your order A&17 is on its way." in mail.text
    [sms] = twilio_peer.messages
    assert sms.body == f"A&17 shipped [ref {nid.replace('-', '')[:8]}]"
    [push] = push_peer.pushes
    payload = push.json()
    assert (payload["title"], payload["message"]) == ("Shipped: A&17", "Tap to track A&17")


async def test_what_goes_out_is_what_was_rendered_at_enqueue(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user, key = f"u-{uuid.uuid4().hex[:8]}", f"order.{uuid.uuid4().hex[:8]}"
    async with running_stack(db_url, worker=False, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="ann@example.com")
        await put_template(stack, key)
        created = await stack.notify(
            user_id=user, template=key, data={"name": "Ann", "order": "A-1"}, channels=["email"]
        )
        # A new version before any worker saw the notification: it changes nothing already
        # enqueued (a retry, likewise, sends the stored parts).
        await put_template(stack, key, email_subject="CHANGED", email_html="<p>CHANGED</p>")
        await stack.start_worker()
        await stack.wait_channel(created["id"], "email", "delivered")
    [mail] = smtp_peer.messages
    assert mail.message["Subject"] == "Your order A-1 (Ann)"
    assert "CHANGED" not in mail.html
    assert created["metadata"]["template"] == {"key": key, "version": 1, "locale": "en"}
