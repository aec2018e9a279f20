"""Transient and permanent failures at the real peers, and what the API then reports:
SMTP 4xx/5xx, Web Push 410/429, and Twilio's error codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.peers import PushPeer, PushReply, TwilioPeer, TwilioReply


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


async def test_smtp_451_three_times_then_250(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    smtp_peer.script("RCPT", *["451 4.3.0 Try again later"] * 3)
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="carol@example.com")
        created = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
        body = await stack.wait_settled(created["id"])

    email = body["delivery_status"]["email"]
    assert email["status"] == "delivered"
    assert email["attempts"] == 4
    assert body["retry_count"] == 3
    assert body["status"] == "delivered"
    relay = f"{smtp_peer.host}:{smtp_peer.port}"
    assert email["provider_id"] == f"{relay} <{created['id']}@notifier.test>"
    assert smtp_peer.rcpts == ["carol@example.com"] * 4
    assert len(smtp_peer.messages) == 1


async def test_smtp_550_fails_at_once(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="nouser@example.com")
        created = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
        body = await stack.wait_settled(created["id"])

    email = body["delivery_status"]["email"]
    assert email["status"] == "failed"
    assert email["attempts"] == 1
    assert "550" in email["last_error"] and "No such user" in email["last_error"]
    assert email["next_attempt_at"] is None
    assert body["status"] == "failed"
    assert body["retry_count"] == 0
    assert smtp_peer.rcpts == ["nouser@example.com"]
    assert smtp_peer.messages == []


async def test_smtp_partial_failure(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    """One channel failed for good, another succeeded: ``partially_failed``."""
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="nouser@example.com")
        created = await stack.notify(
            user_id=user, title="t", message="m", channels=["email", "websocket"]
        )
        body = await stack.wait_settled(created["id"])
    assert body["delivery_status"]["websocket"]["status"] == "sent"
    assert body["delivery_status"]["email"]["status"] == "failed"
    assert body["status"] == "partially_failed"


async def test_push_410_deletes_the_subscription(
    db_url: str, push_peer: PushPeer, push_settings: dict[str, Any]
) -> None:
    user = new_user()
    gone = push_peer.subscribe()
    push_peer.reply(gone.id, PushReply(410))
    async with running_stack(db_url, **push_settings) as stack:
        response = await stack.api.post(f"/v1/users/{user}/push-subscriptions", json=gone.as_json())
        assert response.status_code == 201
        created = await stack.notify(user_id=user, title="t", message="m", channels=["browser"])
        body = await stack.wait_settled(created["id"])
        left = await stack.sql("SELECT count(*) FROM push_subscriptions WHERE user_id = :u", u=user)
        # The API agrees: the endpoint is no longer there to delete.
        deleted = await stack.api.delete(
            f"/v1/users/{user}/push-subscriptions", params={"endpoint": gone.endpoint}
        )
        # The next push for this user has nothing to go to.
        again = await stack.notify(user_id=user, title="t2", message="m", channels=["browser"])
        again_body = await stack.wait_settled(again["id"])

    browser = body["delivery_status"]["browser"]
    assert browser["status"] == "failed"
    assert browser["attempts"] == 1
    assert "gone" in browser["last_error"]
    assert left == [(0,)]
    assert deleted.status_code == 404
    assert [p.status for p in push_peer.pushes] == [410]
    assert again_body["delivery_status"]["browser"]["status"] == "skipped"
    assert again_body["delivery_status"]["browser"]["last_error"] == "no push subscription"


async def test_push_429_with_retry_after_waits(
    db_url: str, push_peer: PushPeer, push_settings: dict[str, Any]
) -> None:
    user = new_user()
    busy = push_peer.subscribe()
    push_peer.reply(busy.id, PushReply(429, retry_after="120"))
    async with running_stack(db_url, **push_settings) as stack:
        response = await stack.api.post(f"/v1/users/{user}/push-subscriptions", json=busy.as_json())
        assert response.status_code == 201
        created = await stack.notify(user_id=user, title="t", message="m", channels=["browser"])
        before = datetime.now(UTC)
        body = await stack.wait_channel(created["id"], "browser", "retrying")

    browser = body["delivery_status"]["browser"]
    assert body["status"] == "retrying"
    assert browser["attempts"] == 1  # a 120 s wait is not waited out in-process
    assert "429" in browser["last_error"]
    due = datetime.fromisoformat(browser["next_attempt_at"])
    assert due >= before + timedelta(seconds=120)
    assert due <= datetime.now(UTC) + timedelta(seconds=121)
    assert [p.status for p in push_peer.pushes] == [429]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (21211, "invalid 'To' phone number"),
        (21614, "not a mobile number"),
        (21608, "unverified"),
    ],
)
async def test_twilio_permanent_codes(
    db_url: str, twilio_peer: TwilioPeer, code: int, reason: str
) -> None:
    user = new_user()
    twilio_peer.fail_to("+15005550001", TwilioReply.error(400, code))
    async with running_stack(db_url, **twilio_peer.settings()) as stack:
        await stack.put_recipient(user, phone="+15005550001")
        created = await stack.notify(user_id=user, title="t", message="m", channels=["sms"])
        body = await stack.wait_settled(created["id"])

    sms = body["delivery_status"]["sms"]
    assert sms["status"] == "failed"
    assert sms["attempts"] == 1
    assert str(code) in sms["last_error"] and reason in sms["last_error"]
    assert body["status"] == "failed"
    assert twilio_peer.posts == 1


async def test_twilio_21610_opts_the_recipient_out(db_url: str, twilio_peer: TwilioPeer) -> None:
    user = new_user()
    twilio_peer.fail_to("+15005550002", TwilioReply.error(400, 21610))
    async with running_stack(db_url, **twilio_peer.settings()) as stack:
        await stack.put_recipient(user, phone="+15005550002")
        first = await stack.notify(user_id=user, title="t", message="m", channels=["sms"])
        first_body = await stack.wait_settled(first["id"])
        recipient = await stack.get_recipient(user)
        later = await stack.notify(user_id=user, title="t2", message="m", channels=["sms"])
        later_body = await stack.wait_settled(later["id"])

    assert first_body["delivery_status"]["sms"]["status"] == "failed"
    assert "21610" in first_body["delivery_status"]["sms"]["last_error"]
    assert recipient["sms_opted_out"] is True
    sms = later_body["delivery_status"]["sms"]
    assert sms["status"] == "skipped"
    assert "opted out" in sms["last_error"]
    assert sms["attempts"] == 0
    assert later_body["status"] == "skipped"  # nothing went out
    assert twilio_peer.posts == 1  # the later SMS never reached Twilio


async def test_twilio_throttled_twice_then_accepted(db_url: str, twilio_peer: TwilioPeer) -> None:
    user = new_user()
    twilio_peer.script(TwilioReply.error(429, 20429), TwilioReply.error(429, 20429))
    async with running_stack(db_url, **twilio_peer.settings()) as stack:
        await stack.put_recipient(user, phone="+15005550003")
        created = await stack.notify(user_id=user, title="t", message="m", channels=["sms"])
        body = await stack.wait_settled(created["id"])

    sms = body["delivery_status"]["sms"]
    [message] = twilio_peer.messages
    assert sms["status"] == "sent"
    assert sms["attempts"] == 3
    assert sms["provider_id"] == message.sid
    assert body["retry_count"] == 2
    assert twilio_peer.posts == 3
