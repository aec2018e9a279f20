from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifier.channels.base import (
    DeliveryError,
    Destination,
    NotDeliverable,
    PermanentError,
    ProviderAuthError,
    SubscriptionGone,
    TransientError,
)
from notifier.channels.browser import (
    MAX_PUSH_PAYLOAD_BYTES,
    BrowserChannel,
    build_push_payload,
    push_payload_fits,
    vapid_public_key,
)
from notifier.models.notification import Channel, ChannelStatus
from notifier.settings import Settings
from tests.channels import make_message
from tests.peers import PushPeer, PushReply
from tests.peers.push import b64url

_VAPID_KEY = ec.generate_private_key(ec.SECP256R1())
VAPID_RAW = b64url(_VAPID_KEY.private_numbers().private_value.to_bytes(32, "big"))
VAPID_PEM = _VAPID_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
SUBJECT = "mailto:ops@notifier.test"


def push_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "vapid_private_key": VAPID_RAW,
        "vapid_subject": SUBJECT,
        "push_allow_private_endpoints": True,  # the peer is on 127.0.0.1
        "push_ttl_seconds": 3600,
    }
    return Settings(**{**values, **overrides})


class Gone:
    """Records the endpoints the channel reports as gone (the worker would delete them)."""

    def __init__(self) -> None:
        self.endpoints: list[str] = []

    async def __call__(self, endpoint: str) -> None:
        self.endpoints.append(endpoint)


@pytest.fixture
def gone() -> Gone:
    return Gone()


@pytest.fixture
async def channel(gone: Gone) -> AsyncIterator[BrowserChannel]:
    channel = BrowserChannel(push_settings(), on_subscription_gone=gone, timeout_seconds=2.0)
    yield channel
    await channel.aclose()


@pytest.mark.parametrize(
    ("priority", "urgency"),
    [("low", "low"), ("normal", "normal"), ("high", "high"), ("urgent", "high")],
)
async def test_push_is_encrypted_signed_and_labelled(
    channel: BrowserChannel, push_peer: PushPeer, priority: str, urgency: str
) -> None:
    sub = push_peer.subscribe()
    message = make_message(priority=priority, title="Ünïcode ✓ <title>")

    result = await channel.send(message, Destination(user_id="u", push_targets=(sub.target,)))

    [push] = await push_peer.wait_for_pushes(1)
    assert channel.name is Channel.BROWSER
    assert result.status is ChannelStatus.SENT
    assert push.status == 201
    assert push.vapid_error is None
    assert push.content_encoding == "aes128gcm"
    assert push.payload == build_push_payload(message)
    assert push.json() == {
        "id": str(message.notification_id),
        "title": "Ünïcode ✓ <title>",
        "message": message.message,
        "type": "success",
        "priority": priority,
        "action_url": message.action_url,
        "created_at": message.created_at.isoformat(timespec="milliseconds"),
    }
    assert push.ttl == "3600"
    assert push.urgency == urgency
    assert push.topic == message.notification_id.hex
    assert push.vapid_claims is not None
    assert push.vapid_claims["sub"] == SUBJECT
    assert push.vapid_claims["aud"] == push_peer.origin
    assert push.vapid_public_key == vapid_public_key(VAPID_RAW)


async def test_pem_key_and_fresh_claims_per_send(gone: Gone, push_peer: PushPeer) -> None:
    channel = BrowserChannel(
        push_settings(vapid_private_key=None),
        on_subscription_gone=gone,
        vapid_private_key=VAPID_PEM,
    )
    sub = push_peer.subscribe()
    target = Destination(user_id="u", push_targets=(sub.target,))
    try:
        await channel.send(make_message(), target)
        await channel.send(make_message(), target)
    finally:
        await channel.aclose()

    pushes = await push_peer.wait_for_pushes(2)
    assert [p.vapid_error for p in pushes] == [None, None]
    assert {p.vapid_public_key for p in pushes} == {vapid_public_key(VAPID_RAW)}


async def test_unsafe_action_url_is_left_out(channel: BrowserChannel, push_peer: PushPeer) -> None:
    sub = push_peer.subscribe()

    await channel.send(
        make_message(action_url="javascript:alert(1)"),
        Destination(user_id="u", push_targets=(sub.target,)),
    )

    [push] = await push_peer.wait_for_pushes(1)
    assert "action_url" not in push.json()


async def test_every_subscription_gets_it(
    channel: BrowserChannel, push_peer: PushPeer, gone: Gone
) -> None:
    live, dead, other = push_peer.subscribe(), push_peer.subscribe(), push_peer.subscribe()
    push_peer.reply(dead.id, PushReply(410))
    targets = (live.target, dead.target, other.target)

    result = await channel.send(make_message(), Destination(user_id="u", push_targets=targets))

    await push_peer.wait_for_pushes(3)
    assert result.status is ChannelStatus.SENT
    assert result.detail == "accepted by 2 of 3 subscriptions"
    assert gone.endpoints == [dead.endpoint]
    assert {p.sub_id for p in push_peer.pushes} == {live.id, dead.id, other.id}


def _in_two_minutes() -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)


@pytest.mark.parametrize(
    ("reply", "expected", "deleted"),
    [
        pytest.param(PushReply(404), SubscriptionGone, True, id="404"),
        pytest.param(PushReply(410), SubscriptionGone, True, id="410"),
        pytest.param(PushReply(429, retry_after="120"), TransientError, False, id="429"),
        pytest.param(PushReply(503), TransientError, False, id="503"),
        pytest.param(PushReply(401), ProviderAuthError, False, id="401"),
        pytest.param(PushReply(403), ProviderAuthError, False, id="403"),
        pytest.param(PushReply(400), PermanentError, False, id="400"),
        pytest.param(PushReply(413), PermanentError, False, id="413"),
        pytest.param(PushReply(reset=True), TransientError, False, id="reset"),
    ],
)
async def test_push_service_answers_are_classified(
    channel: BrowserChannel,
    push_peer: PushPeer,
    gone: Gone,
    reply: PushReply,
    expected: type[DeliveryError],
    deleted: bool,
) -> None:
    sub = push_peer.subscribe()
    push_peer.reply(sub.id, reply)

    with pytest.raises(expected) as caught:
        await channel.send(make_message(), Destination(user_id="u", push_targets=(sub.target,)))

    assert type(caught.value) is expected
    assert len(await push_peer.wait_for_pushes(1)) == 1
    assert gone.endpoints == ([sub.endpoint] if deleted else [])
    if reply.retry_after is not None:
        assert isinstance(caught.value, TransientError)
        assert caught.value.retry_after == 120


async def test_retry_after_as_http_date(channel: BrowserChannel, push_peer: PushPeer) -> None:
    sub = push_peer.subscribe()
    push_peer.reply(sub.id, PushReply(429, retry_after=_in_two_minutes()))

    with pytest.raises(TransientError) as caught:
        await channel.send(make_message(), Destination(user_id="u", push_targets=(sub.target,)))

    assert caught.value.retry_after is not None
    assert 100 <= caught.value.retry_after <= 120


async def test_redirect_is_not_followed(channel: BrowserChannel, push_peer: PushPeer) -> None:
    async with PushPeer() as elsewhere:
        target_there = elsewhere.subscribe()
        sub = push_peer.subscribe()
        push_peer.reply(sub.id, PushReply(307, location=target_there.endpoint))

        with pytest.raises(PermanentError, match="redirect"):
            await channel.send(make_message(), Destination(user_id="u", push_targets=(sub.target,)))

        assert len(push_peer.pushes) == 1
        assert elsewhere.connections == 0
        assert elsewhere.pushes == []


async def test_private_endpoint_refused_without_contact(gone: Gone, push_peer: PushPeer) -> None:
    channel = BrowserChannel(
        push_settings(push_allow_private_endpoints=False), on_subscription_gone=gone
    )
    sub = push_peer.subscribe()
    try:
        with pytest.raises(PermanentError, match="refused"):
            await channel.send(make_message(), Destination(user_id="u", push_targets=(sub.target,)))
    finally:
        await channel.aclose()
    assert push_peer.connections == 0
    assert gone.endpoints == []


async def test_oversize_payload_is_refused_before_sending(
    channel: BrowserChannel, push_peer: PushPeer
) -> None:
    sub = push_peer.subscribe()

    with pytest.raises(PermanentError, match="limit"):
        await channel.send(
            make_message(message="x" * MAX_PUSH_PAYLOAD_BYTES),
            Destination(user_id="u", push_targets=(sub.target,)),
        )
    assert push_peer.connections == 0


def test_payload_fits_is_exact_at_the_limit() -> None:
    longest = make_message(
        title="", message="", priority="urgent", notification_type="progress", action_url=None
    )
    room = MAX_PUSH_PAYLOAD_BYTES - len(build_push_payload(longest))

    assert push_payload_fits(title="", message="m" * room)
    assert not push_payload_fits(title="", message="m" * (room + 1))
    # Multi-byte characters count as the bytes they take.
    assert not push_payload_fits(title="", message="é" * (room // 2 + 1))
    # An unsafe URL is not sent, so it does not count.
    assert push_payload_fits(title="", message="m" * room, action_url="javascript:" + "x" * 99)
    # Shorter type and priority only make the payload smaller.
    assert push_payload_fits(title="", message="m" * room, notification_type="info", priority="low")


async def test_maximal_payload_is_delivered(channel: BrowserChannel, push_peer: PushPeer) -> None:
    empty = make_message(message="", action_url=None)
    room = MAX_PUSH_PAYLOAD_BYTES - len(build_push_payload(empty))
    message = make_message(
        **{
            **{f: getattr(empty, f) for f in ("notification_id", "created_at")},
            "message": "m" * room,
            "action_url": None,
        }
    )
    sub = push_peer.subscribe()

    await channel.send(message, Destination(user_id="u", push_targets=(sub.target,)))

    [push] = await push_peer.wait_for_pushes(1)
    assert push.payload is not None
    assert len(push.payload) == MAX_PUSH_PAYLOAD_BYTES


async def test_no_subscription_and_not_configured(gone: Gone, channel: BrowserChannel) -> None:
    with pytest.raises(NotDeliverable, match="no push subscription"):
        await channel.send(make_message(), Destination(user_id="u"))
    assert channel.configured
    assert not BrowserChannel(Settings(), on_subscription_gone=gone).configured
    assert BrowserChannel(
        Settings(vapid_subject=SUBJECT), on_subscription_gone=gone, vapid_private_key=VAPID_RAW
    ).configured
