"""Every channel end to end: ``POST /v1/notifications`` → a real dispatcher → the real peers
(SMTP, Twilio, Web Push, a WebSocket client), checking what arrives and what the API reports."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import websockets

from notifier.channels.browser import vapid_public_key
from tests.dispatch.conftest import VAPID_SUBJECT
from tests.dispatch.harness import Body, Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.peers import PushPeer, TwilioPeer
from tests.peers.push import BrowserSubscription


def ws_url(stack: Stack, token: str) -> str:
    return stack.base_url.replace("http://", "ws://") + f"/v1/ws?token={token}"


async def next_notification_frame(socket: websockets.ClientConnection) -> dict[str, Any]:
    while True:
        frame = json.loads(await socket.recv())
        if frame["type"] == "notification":
            return dict(frame["notification"])


async def subscribe(stack: Stack, user: str, subscription: BrowserSubscription) -> None:
    response = await stack.api.post(
        f"/v1/users/{user}/push-subscriptions", json=subscription.as_json()
    )
    assert response.status_code == 201, response.text


def assert_recent(channel_state: Body, attempts: int = 1) -> None:
    assert channel_state["attempts"] == attempts
    updated = datetime.fromisoformat(channel_state["updated_at"])
    assert abs(datetime.now(updated.tzinfo) - updated) < timedelta(seconds=30)


async def test_all_channels_to_a_stored_recipient(
    db_url: str,
    smtp_peer: DispatchSmtpPeer,
    twilio_peer: TwilioPeer,
    push_peer: PushPeer,
    push_settings: dict[str, Any],
    vapid_key: str,
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    settings = {**smtp_peer.settings(), **twilio_peer.settings(), **push_settings}
    async with running_stack(db_url, **settings) as stack:
        await stack.put_recipient(user, email="alice@example.com", phone="+15005550010")
        browser = push_peer.subscribe()
        await subscribe(stack, user, browser)
        token = await stack.service.user_token(user)
        async with websockets.connect(ws_url(stack, token)) as socket:
            created = await stack.notify(
                user_id=user,
                title="Build <b>done</b>",
                message="All 12 steps passed.\nSee the log.",
                priority="high",
                action_url="https://app.example.com/builds/42",
                channels=["email", "sms", "browser", "websocket"],
            )
            nid = created["id"]
            frame = await next_notification_frame(socket)
            assert frame["id"] == nid and frame["title"] == "Build <b>done</b>"
            await stack.wait_channel(nid, "websocket", "sent")
            await socket.send(json.dumps({"type": "ack", "id": nid}))
            body = await stack.wait_until(
                nid,
                lambda n: (
                    n["status"] == "delivered"
                    and n["delivery_status"]["websocket"]["status"] == "delivered"
                ),
            )

    # Email: text and HTML parts, subject, Message-ID.
    [mail] = smtp_peer.messages
    message_id = f"<{nid}@notifier.test>"
    assert mail.rcpt_tos == ["alice@example.com"]
    assert mail.message["Subject"] == "Build <b>done</b>"
    assert mail.message["Message-ID"] == message_id
    assert mail.message["From"] == "Notifier <notify@notifier.test>"
    assert "All 12 steps passed.\nSee the log." in mail.text
    assert "https://app.example.com/builds/42" in mail.text
    assert ">Build &lt;b&gt;done&lt;/b&gt;</h2>" in mail.html
    assert '<a href="https://app.example.com/builds/42" ' in mail.html

    # SMS: To, From, body with title, message and the reference.
    [sms] = twilio_peer.messages
    assert sms.to == "+15005550010"
    assert sms.from_ == twilio_peer.from_number
    assert sms.body == f"Build <b>done</b>: All 12 steps passed. See the log. [ref {nid[:8]}]"
    assert sms.status_callback == f"{stack.base_url}/v1/webhooks/twilio/status"

    # Push: decrypted payload, headers, VAPID.
    [push] = push_peer.pushes
    assert push.status == 201 and push.vapid_error is None
    payload = push.json()
    assert payload["id"] == nid
    assert payload["title"] == "Build <b>done</b>"
    assert payload["message"] == "All 12 steps passed.\nSee the log."
    assert payload["action_url"] == "https://app.example.com/builds/42"
    assert push.ttl == "600"
    assert push.urgency == "high"
    assert push.topic == uuid.UUID(nid).hex
    assert push.content_encoding == "aes128gcm"
    assert push.vapid_claims is not None and push.vapid_claims["sub"] == VAPID_SUBJECT
    assert push.vapid_claims["aud"] == push_peer.origin
    assert push.vapid_public_key == vapid_public_key(vapid_key)

    # The API: every channel's outcome.
    status = body["delivery_status"]
    assert status["email"]["status"] == "delivered"
    assert status["email"]["provider_id"] == f"{smtp_peer.host}:{smtp_peer.port} {message_id}"
    assert status["sms"]["status"] == "sent"
    assert status["sms"]["provider_id"] == sms.sid
    assert status["browser"]["status"] == "sent"
    assert status["browser"]["provider_id"].startswith(f"{push_peer.origin}/message/")
    assert status["websocket"]["status"] == "delivered"
    for channel in ("email", "sms", "browser", "websocket"):
        assert_recent(status[channel])
        assert status[channel]["last_error"] is None
    assert body["retry_count"] == 0


async def test_per_notification_recipient_override(
    db_url: str, smtp_peer: DispatchSmtpPeer, twilio_peer: TwilioPeer
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with running_stack(db_url, **smtp_peer.settings(), **twilio_peer.settings()) as stack:
        await stack.put_recipient(user, email="stored@example.com", phone="+15005550011")
        created = await stack.notify(
            user_id=user,
            title="Your code",
            message="123456",
            channels=["email", "sms"],
            recipient={"email": "other@example.com", "phone": "+15005550012"},
        )
        body = await stack.wait_settled(created["id"])
        # Without a stored recipient at all, the override is the only address.
        lone = await stack.notify(
            user_id=f"nobody-{uuid.uuid4().hex[:8]}",
            title="Hello",
            message="there",
            channels=["email"],
            recipient={"email": "lone@example.com"},
        )
        lone_body = await stack.wait_settled(lone["id"])

    assert body["status"] == "delivered"
    assert body["delivery_status"]["email"]["status"] == "delivered"
    assert body["delivery_status"]["sms"]["status"] == "sent"
    assert lone_body["delivery_status"]["email"]["status"] == "delivered"
    assert [m.rcpt_tos for m in smtp_peer.messages] == [
        ["other@example.com"],
        ["lone@example.com"],
    ]
    assert smtp_peer.messages[0].message["To"] == "other@example.com"
    [sms] = twilio_peer.messages
    assert sms.to == "+15005550012"
    assert sms.body == f"Your code: 123456 [ref {created['id'][:8]}]"
