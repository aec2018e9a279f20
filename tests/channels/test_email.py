from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from notifier.channels.base import (
    DeliveryError,
    Destination,
    NotDeliverable,
    PermanentError,
    ProviderAuthError,
    TransientError,
    UnknownOutcomeError,
)
from notifier.channels.email import EmailChannel
from notifier.models.notification import Channel, ChannelStatus
from notifier.settings import Settings
from notifier.unsubscribe import UnsubscribeTarget, verify
from tests.channels import make_message
from tests.peers import SmtpPeer
from tests.peers.base import free_port

TO = Destination(user_id="user-1", email="alice@example.com")


def settings_for(peer: SmtpPeer, **overrides: Any) -> Settings:
    return Settings(**peer.settings(**{"smtp_timeout_seconds": 2.0, **overrides}))


@pytest.fixture
async def channel(smtp_peer: SmtpPeer) -> AsyncIterator[EmailChannel]:
    channel = EmailChannel(settings_for(smtp_peer))
    yield channel
    await channel.aclose()


async def test_delivers_text_and_html_with_headers(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    message = make_message(title="Build <b>done</b> & dusted", message="line one\nline <two>")

    result = await channel.send(message, TO)

    [mail] = await smtp_peer.wait_for_messages(1)
    message_id = f"<{message.notification_id}@notifier.test>"
    assert channel.name is Channel.EMAIL
    assert result.status is ChannelStatus.DELIVERED
    # Which relay took it (host:port), then the Message-ID.
    assert result.provider_id == f"{smtp_peer.host}:{smtp_peer.port} {message_id}"
    assert mail.mail_from == "notify@notifier.test"
    assert mail.rcpt_tos == ["alice@example.com"]
    assert mail.message["Subject"] == "Build <b>done</b> & dusted"
    assert mail.message["From"] == "Notifier <notify@notifier.test>"
    assert mail.message["To"] == "alice@example.com"
    assert mail.message["Message-ID"] == message_id
    assert mail.message["X-Notifier-Notification-Id"] == str(message.notification_id)
    assert mail.message.get_content_type() == "multipart/alternative"
    assert "line one\nline <two>" in mail.text
    assert "https://app.example.com/builds/42?tab=log&x=1" in mail.text
    # The HTML part escapes the user's text and the link.
    assert "Build &lt;b&gt;done&lt;/b&gt; &amp; dusted" in mail.html
    assert "line &lt;two&gt;" in mail.html
    assert '<a href="https://app.example.com/builds/42?tab=log&amp;x=1" ' in mail.html
    assert "<b>" not in mail.html


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,x", "ftp://example.com/f", "//evil.example"]
)
async def test_non_http_action_url_is_not_linked(
    channel: EmailChannel, smtp_peer: SmtpPeer, url: str
) -> None:
    await channel.send(make_message(action_url=url), TO)

    [mail] = await smtp_peer.wait_for_messages(1)
    assert "<a " not in mail.html
    assert url not in mail.text
    assert url not in mail.html


async def test_subject_cannot_inject_headers(channel: EmailChannel, smtp_peer: SmtpPeer) -> None:
    await channel.send(make_message(title="Hello\r\nBcc: evil@example.com\nX-Evil: 1"), TO)

    [mail] = await smtp_peer.wait_for_messages(1)
    assert mail.message["Subject"] == "Hello Bcc: evil@example.com X-Evil: 1"
    assert mail.message["Bcc"] is None
    assert mail.message["X-Evil"] is None
    assert mail.rcpt_tos == ["alice@example.com"]


async def test_resend_carries_the_same_message_id(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    message = make_message()

    first = await channel.send(message, TO)
    second = await channel.send(message, TO)

    mails = await smtp_peer.wait_for_messages(2)
    assert first.provider_id == second.provider_id
    assert first.provider_id is not None
    message_id = first.provider_id.split(" ", 1)[1]
    assert mails[0].message["Message-ID"] == mails[1].message["Message-ID"] == message_id


async def test_connection_is_reused_across_messages(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    for _ in range(3):
        await channel.send(make_message(), TO)

    mails = await smtp_peer.wait_for_messages(3)
    assert len(mails) == 3
    assert smtp_peer.connections == 1
    assert {mail.connection for mail in mails} == {1}


async def test_concurrent_sends_stay_within_the_pool(smtp_peer: SmtpPeer) -> None:
    channel = EmailChannel(settings_for(smtp_peer), max_connections=2)
    try:
        await asyncio.gather(*(channel.send(make_message(), TO) for _ in range(6)))
    finally:
        await channel.aclose()

    assert len(await smtp_peer.wait_for_messages(6)) == 6
    assert smtp_peer.connections <= 2


def _script(command: str, *responses: str) -> Any:
    return lambda peer: peer.script(command, *responses)


def _greeting(text: str) -> Any:
    def apply(peer: SmtpPeer) -> None:
        peer.greeting = text

    return apply


@pytest.mark.parametrize(
    ("to", "behaviour", "expected"),
    [
        pytest.param("busy@example.com", None, TransientError, id="rcpt-451"),
        pytest.param("nouser@example.com", None, PermanentError, id="rcpt-550"),
        pytest.param(None, _script("RCPT", "452 4.2.2 Mailbox full"), TransientError, id="452"),
        pytest.param(None, _script("DATA", "451 4.3.0 Local error"), TransientError, id="data-451"),
        pytest.param(None, _script("DATA", "554 5.6.0 Rejected"), PermanentError, id="data-554"),
        pytest.param(None, _script("MAIL", "530 5.7.0 Auth required"), ProviderAuthError, id="530"),
        pytest.param(None, _greeting("421 4.3.2 Service not available"), TransientError, id="421"),
        pytest.param(None, _script("DATA", "drop"), UnknownOutcomeError, id="drop-after-data"),
    ],
)
async def test_smtp_failures_are_classified(
    channel: EmailChannel,
    smtp_peer: SmtpPeer,
    to: str | None,
    behaviour: Any,
    expected: type[DeliveryError],
) -> None:
    if behaviour is not None:
        behaviour(smtp_peer)

    with pytest.raises(expected) as caught:
        await channel.send(make_message(), Destination(user_id="u", email=to or TO.email))

    assert type(caught.value) is expected
    if expected is UnknownOutcomeError:
        # The server did get it: that is exactly why the outcome is unknown.
        assert len(smtp_peer.messages) == 1
    else:
        assert smtp_peer.messages == []


@pytest.mark.parametrize(
    ("stall_at", "expected"),
    [("greeting", TransientError), ("RCPT", TransientError), ("DATA", UnknownOutcomeError)],
)
async def test_stalled_server_times_out(
    smtp_peer: SmtpPeer, stall_at: str, expected: type[DeliveryError]
) -> None:
    channel = EmailChannel(settings_for(smtp_peer, smtp_timeout_seconds=0.5))
    if stall_at == "greeting":
        smtp_peer.greeting = "stall"
    else:
        smtp_peer.script(stall_at, "stall")  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(expected):
            await channel.send(make_message(), TO)
    finally:
        await channel.aclose()
    assert loop.time() - started < 2.0


async def test_451_three_times_then_delivered_exactly_once(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    smtp_peer.script("RCPT", *["451 4.3.0 Try again later"] * 3)
    message = make_message()

    for _ in range(3):
        with pytest.raises(TransientError):
            await channel.send(message, TO)
    result = await channel.send(message, TO)

    assert result.status is ChannelStatus.DELIVERED
    assert len(await smtp_peer.wait_for_messages(1)) == 1
    assert len(smtp_peer.messages) == 1


async def test_broken_connection_is_replaced(channel: EmailChannel, smtp_peer: SmtpPeer) -> None:
    await channel.send(make_message(), TO)
    smtp_peer.script("DATA", "drop")
    with pytest.raises(UnknownOutcomeError):
        await channel.send(make_message(), TO)

    await channel.send(make_message(), TO)

    mails = await smtp_peer.wait_for_messages(3)
    assert smtp_peer.connections == 2
    assert [mail.connection for mail in mails] == [1, 1, 2]


async def test_connection_closed_by_server_while_idle_is_replaced(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    await channel.send(make_message(), TO)
    await smtp_peer.disconnect_all()

    result = await channel.send(make_message(), TO)

    assert result.status is ChannelStatus.DELIVERED
    mails = await smtp_peer.wait_for_messages(2)
    assert [mail.connection for mail in mails] == [1, 2]


@pytest.mark.parametrize(
    ("password", "delivered"), [("right-password", True), ("wrong-password", False)]
)
async def test_smtp_auth(password: str, delivered: bool) -> None:
    async with SmtpPeer(credentials=("mailer", "right-password")) as peer:
        channel = EmailChannel(settings_for(peer, smtp_password=password))
        try:
            if delivered:
                await channel.send(make_message(), TO)
                assert len(await peer.wait_for_messages(1)) == 1
            else:
                with pytest.raises(ProviderAuthError):
                    await channel.send(make_message(), TO)
                assert peer.messages == []
                assert peer.failed_logins >= 1
        finally:
            await channel.aclose()


async def test_connection_refused_is_transient() -> None:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_from="n@notifier.test")
    channel = EmailChannel(settings)
    try:
        with pytest.raises(TransientError) as caught:
            await channel.send(make_message(), TO)
        assert type(caught.value) is TransientError
    finally:
        await channel.aclose()


async def test_no_address_and_not_configured(channel: EmailChannel) -> None:
    with pytest.raises(NotDeliverable, match="no email address"):
        await channel.send(make_message(), Destination(user_id="u"))
    assert channel.configured
    assert not EmailChannel(Settings(smtp_host=None)).configured


async def test_a_content_error_is_not_called_an_address_error(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    # A lone surrogate has no UTF-8 encoding (no API request can carry one; a row could).
    with pytest.raises(PermanentError) as refused:
        await channel.send(make_message(title="Build \udcff failed"), TO)

    assert str(refused.value).startswith("the email could not be built: UnicodeEncodeError")
    assert "address" not in str(refused.value)
    assert smtp_peer.connections == 0  # built before connecting


async def test_an_address_with_control_characters_is_unusable(
    channel: EmailChannel, smtp_peer: SmtpPeer
) -> None:
    with pytest.raises(PermanentError) as refused:
        await channel.send(make_message(), Destination(user_id="u", email="alice\r\n@example.com"))

    assert str(refused.value).startswith("unusable address")
    assert smtp_peer.connections == 0


async def test_each_email_carries_its_own_user_s_unsubscribe_link(smtp_peer: SmtpPeer) -> None:
    """The links are signed once per (user, type) and remembered: every email, the second of
    a user's included, still unsubscribes exactly its own user from its own type."""
    secret = "unsubscribe-secret-" + "s" * 32
    channel = EmailChannel(settings_for(smtp_peer, token_secret=secret))
    sent = [("user-1", "success"), ("user-2", "success"), ("user-1", "warning")] * 2
    try:
        for user_id, kind in sent:
            destination = Destination(user_id=user_id, email="alice@example.com")
            await channel.send(make_message(user_id=user_id, notification_type=kind), destination)
        mails = await smtp_peer.wait_for_messages(len(sent))
    finally:
        await channel.aclose()
    for mail, (user_id, kind) in zip(mails, sent, strict=True):
        link = mail.message["List-Unsubscribe"].strip("<>")
        assert link.rpartition("/")[2] in mail.text
        assert verify(secret, link.rpartition("/")[2]) == UnsubscribeTarget(user_id, kind)
