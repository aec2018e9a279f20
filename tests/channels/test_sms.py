from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from notifier.channels.base import (
    DeliveryError,
    Destination,
    NotDeliverable,
    PermanentError,
    ProviderAuthError,
    RecipientOptedOut,
    TransientError,
    UnknownOutcomeError,
)
from notifier.channels.sms import (
    MAX_SMS_BODY_CHARS,
    SmsChannel,
    build_sms_body,
    twilio_status_to_channel_status,
    validate_twilio_signature,
)
from notifier.models.notification import Channel, ChannelStatus
from notifier.settings import Settings
from tests.channels import make_message
from tests.peers import TwilioPeer, TwilioReply
from tests.peers.base import free_port

PHONE = "+15551230000"
TO = Destination(user_id="user-1", phone=PHONE)
CALLBACK = "https://notifier.example.com/v1/webhooks/twilio/status"


def settings_for(peer: TwilioPeer, **overrides: Any) -> Settings:
    return Settings(**{**peer.settings(), **overrides})


@pytest.fixture
async def channel(twilio_peer: TwilioPeer) -> AsyncIterator[SmsChannel]:
    channel = SmsChannel(settings_for(twilio_peer), status_callback_url=CALLBACK)
    yield channel
    await channel.aclose()


async def test_sends_body_to_and_from(channel: SmsChannel, twilio_peer: TwilioPeer) -> None:
    message = make_message(title="Deploy failed", message="prod-eu: health check timed out")

    result = await channel.send(message, TO)

    [sms] = await twilio_peer.wait_for_messages(1)
    assert channel.name is Channel.SMS
    assert result.status is ChannelStatus.SENT
    assert result.provider_id == sms.sid
    assert sms.sid.startswith("SM")
    assert sms.to == PHONE
    assert sms.from_ == twilio_peer.from_number
    assert sms.body == (
        f"Deploy failed: prod-eu: health check timed out [ref {message.notification_id.hex[:8]}]"
    )
    assert sms.status_callback == CALLBACK


async def test_long_body_is_trimmed_and_keeps_its_reference(
    channel: SmsChannel, twilio_peer: TwilioPeer
) -> None:
    message = make_message(message="x" * 5000)

    await channel.send(message, TO)

    [sms] = await twilio_peer.wait_for_messages(1)
    assert len(sms.body) <= MAX_SMS_BODY_CHARS
    assert sms.body.endswith(f"... [ref {message.notification_id.hex[:8]}]")
    assert sms.body == build_sms_body(message)


@pytest.mark.parametrize(
    ("reply", "expected", "text"),
    [
        (TwilioReply.error(400, 21211), PermanentError, "21211"),
        (TwilioReply.error(400, 21614), PermanentError, "21614"),
        (TwilioReply.error(400, 21608), PermanentError, "21608"),
        (TwilioReply.error(400, 21610), RecipientOptedOut, "21610"),
        (TwilioReply.error(429, 20429, retry_after="30"), TransientError, "20429"),
        (TwilioReply.error(429, retry_after="7"), TransientError, "429"),
        (TwilioReply.error(503, 20503), TransientError, "20503"),
        (TwilioReply.error(401, 20003), ProviderAuthError, "401"),
        (TwilioReply.error(400, 21602), PermanentError, "21602"),
        (TwilioReply.error(500), UnknownOutcomeError, "500"),
    ],
    ids=lambda v: str(v.code or v.status) if isinstance(v, TwilioReply) else "",
)
async def test_twilio_errors_are_classified(
    channel: SmsChannel,
    twilio_peer: TwilioPeer,
    reply: TwilioReply,
    expected: type[DeliveryError],
    text: str,
) -> None:
    twilio_peer.fail_to(PHONE, reply)

    with pytest.raises(expected, match=text) as caught:
        await channel.send(make_message(), TO)

    assert type(caught.value) is expected
    assert twilio_peer.posts == 1  # never re-POSTed by the SDK
    assert twilio_peer.messages == []
    if reply.retry_after is not None:
        assert isinstance(caught.value, TransientError)
        assert caught.value.retry_after == float(reply.retry_after)


async def test_wrong_credentials_are_an_auth_error(twilio_peer: TwilioPeer) -> None:
    channel = SmsChannel(settings_for(twilio_peer, twilio_auth_token="not-the-token"))
    try:
        with pytest.raises(ProviderAuthError):
            await channel.send(make_message(), TO)
    finally:
        await channel.aclose()
    assert twilio_peer.messages == []


async def test_no_answer_is_an_unknown_outcome(twilio_peer: TwilioPeer) -> None:
    channel = SmsChannel(settings_for(twilio_peer), timeout_seconds=0.5)
    twilio_peer.script(TwilioReply(hang=True))
    try:
        with pytest.raises(UnknownOutcomeError):
            await channel.send(make_message(), TO)
    finally:
        await channel.aclose()


async def test_connection_refused_is_transient() -> None:
    settings = Settings(
        twilio_account_sid="AC" + "2" * 32,
        twilio_auth_token="token",
        twilio_from="+15005550006",
        twilio_base_url=f"http://127.0.0.1:{free_port()}",
    )
    channel = SmsChannel(settings)
    try:
        with pytest.raises(TransientError) as caught:
            await channel.send(make_message(), TO)
        assert type(caught.value) is TransientError
    finally:
        await channel.aclose()


@pytest.mark.parametrize(
    "lost_reply",
    [TwilioReply.error(500, create=True), TwilioReply(hang=True, create=True)],
    ids=["500-after-create", "timeout-after-create"],
)
async def test_resend_after_unknown_outcome_adopts_the_existing_message(
    twilio_peer: TwilioPeer, lost_reply: TwilioReply
) -> None:
    channel = SmsChannel(settings_for(twilio_peer), timeout_seconds=1.0)
    message = make_message()
    twilio_peer.script(lost_reply)
    try:
        with pytest.raises(UnknownOutcomeError):
            await channel.send(message, TO)
        [created] = await twilio_peer.wait_for_messages(1)

        retry = make_message(**{**_fields(message), "after_unknown_outcome": True})
        result = await channel.send(retry, TO)
    finally:
        await channel.aclose()

    assert result.status is ChannelStatus.SENT
    assert result.provider_id == created.sid
    assert len(twilio_peer.messages) == 1
    assert twilio_peer.posts == 1
    assert twilio_peer.list_requests[-1]["To"] == PHONE


async def test_resend_after_unknown_outcome_sends_when_nothing_arrived(
    channel: SmsChannel, twilio_peer: TwilioPeer
) -> None:
    other = make_message()
    await channel.send(other, TO)  # a different notification to the same number
    message = make_message(after_unknown_outcome=True)

    result = await channel.send(message, TO)

    messages = await twilio_peer.wait_for_messages(2)
    assert result.provider_id == messages[1].sid
    assert messages[1].body.endswith(f"[ref {message.notification_id.hex[:8]}]")


def _fields(message: Any) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__dataclass_fields__}


async def test_status_callback_signature(twilio_peer: TwilioPeer) -> None:
    params, signature = twilio_peer.signed_callback("SM123", "delivered", CALLBACK)
    token = twilio_peer.auth_token

    assert validate_twilio_signature(token, CALLBACK, params, signature)
    assert not validate_twilio_signature(
        token, CALLBACK, {**params, "MessageStatus": "failed"}, signature
    )
    assert not validate_twilio_signature("other-token", CALLBACK, params, signature)
    assert not validate_twilio_signature(
        token, CALLBACK.replace("https", "http"), params, signature
    )
    assert not validate_twilio_signature(token, CALLBACK, params, "")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", None),
        ("sending", None),
        ("sent", None),
        ("delivered", ChannelStatus.DELIVERED),
        ("undelivered", ChannelStatus.FAILED),
        ("failed", ChannelStatus.FAILED),
        ("read", None),
    ],
)
def test_twilio_status_mapping(status: str, expected: ChannelStatus | None) -> None:
    assert twilio_status_to_channel_status(status) is expected


async def test_no_phone_and_not_configured(channel: SmsChannel) -> None:
    with pytest.raises(NotDeliverable, match="no phone number"):
        await channel.send(make_message(), Destination(user_id="u"))
    assert channel.configured
    assert not SmsChannel(Settings(twilio_account_sid=None)).configured
