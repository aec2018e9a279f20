"""Twilio status callbacks through the real ``POST /v1/webhooks/twilio/status``, signed by the
peer for exactly the public URL the service announced to Twilio."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiohttp import web

from notifier.api.routes import webhooks
from tests.dispatch.harness import Stack, running_stack
from tests.peers import TwilioPeer


async def send_sms(stack: Stack, twilio_peer: TwilioPeer, phone: str) -> tuple[str, str]:
    """One SMS notification, sent; returns its id and the Twilio SID."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    await stack.put_recipient(user, phone=phone)
    created = await stack.notify(user_id=user, title="t", message="m", channels=["sms"])
    body = await stack.wait_settled(created["id"])
    assert body["delivery_status"]["sms"]["status"] == "sent"
    [message] = [m for m in twilio_peer.messages if m.to == phone]
    assert body["delivery_status"]["sms"]["provider_id"] == message.sid
    return created["id"], message.sid


async def test_callbacks_move_sent_to_delivered_or_failed(
    db_url: str, twilio_peer: TwilioPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A callback for an SID nobody recorded waits this long before it is ignored.
    monkeypatch.setattr(webhooks, "UNKNOWN_SID_WAIT_SECONDS", 0.3)
    async with running_stack(db_url, **twilio_peer.settings()) as stack:
        callback_url = f"{stack.base_url}/v1/webhooks/twilio/status"
        nid, sid = await send_sms(stack, twilio_peer, "+15005550020")
        [message] = twilio_peer.messages
        assert message.status_callback == callback_url

        # Progress reports that are not final change nothing.
        assert await twilio_peer.send_status_callback(sid, "queued", callback_url) == 204
        assert (await stack.get(nid))["delivery_status"]["sms"]["status"] == "sent"

        # A forged (or mis-signed) callback is refused and changes nothing.
        forged = await twilio_peer.send_status_callback(
            sid, "delivered", callback_url, signature="bm90LWEtc2lnbmF0dXJl"
        )
        assert forged == 403
        # Signed for another URL: refused too.
        _, other = twilio_peer.signed_callback(sid, "delivered", "https://elsewhere.test/hook")
        wrong_url = await twilio_peer.send_status_callback(
            sid, "delivered", callback_url, signature=other
        )
        assert wrong_url == 403
        after_forgery = await stack.get(nid)
        assert after_forgery["delivery_status"]["sms"]["status"] == "sent"

        assert await twilio_peer.send_status_callback(sid, "delivered", callback_url) == 204
        delivered = await stack.get(nid)
        assert delivered["delivery_status"]["sms"]["status"] == "delivered"
        assert delivered["status"] == "delivered"
        stamp = delivered["delivery_status"]["sms"]["updated_at"]

        # An out-of-order `sent`, a duplicate `delivered` and a late `undelivered`: no change.
        for late in ("sent", "delivered", "undelivered"):
            assert await twilio_peer.send_status_callback(sid, late, callback_url) == 204
            again = await stack.get(nid)
            assert again["delivery_status"]["sms"]["status"] == "delivered", late
            assert again["delivery_status"]["sms"]["updated_at"] == stamp, late
            assert again["status"] == "delivered"

        # `undelivered` on a sent SMS: the channel fails, and says why.
        other_nid, other_sid = await send_sms(stack, twilio_peer, "+15005550021")
        assert await twilio_peer.send_status_callback(other_sid, "undelivered", callback_url) == 204
        failed = await stack.get(other_nid)

        # A callback for a message that is not ours is acknowledged and ignored.
        unknown = await twilio_peer.send_status_callback("SM" + "0" * 32, "delivered", callback_url)

    sms = failed["delivery_status"]["sms"]
    assert sms["status"] == "failed"
    assert "undelivered" in sms["last_error"]
    assert failed["status"] == "failed"
    assert unknown == 204


class SlowAnsweringTwilio(TwilioPeer):
    """Creates the message at once but answers the POST only after ``delay`` seconds, so a
    status callback can arrive before the worker knows the SID."""

    delay = 0.5

    async def _create(self, request: web.Request) -> web.StreamResponse:
        response = await super()._create(request)
        await asyncio.sleep(self.delay)
        return response


async def test_callback_that_overtakes_the_workers_record_is_not_lost(db_url: str) -> None:
    """Twilio may call back before the worker has recorded ``sent`` and the SID (its reply to
    the POST is slow, or the worker's commit is). Twilio does not send the callback again, so
    it must not be dropped: the SMS ends ``delivered`` all the same."""
    async with (
        SlowAnsweringTwilio() as twilio_peer,
        running_stack(db_url, **twilio_peer.settings()) as stack,
    ):
        callback_url = f"{stack.base_url}/v1/webhooks/twilio/status"
        user = f"u-{uuid.uuid4().hex[:8]}"
        await stack.put_recipient(user, phone="+15005550022")
        created = await stack.notify(user_id=user, title="t", message="m", channels=["sms"])
        [message] = await twilio_peer.wait_for_messages(1)
        # Right after the peer created the message, while its answer is still on the way.
        status = await twilio_peer.send_status_callback(message.sid, "delivered", callback_url)
        body = await stack.wait_channel(created["id"], "sms", "delivered", within=5)
    assert status == 204
    assert body["delivery_status"]["sms"]["provider_id"] == message.sid
    assert body["status"] == "delivered"
