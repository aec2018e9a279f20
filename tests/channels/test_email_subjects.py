"""Every title the API accepts (1 to 200 characters, no control characters) makes a valid email
whose Subject, as the real aiosmtpd peer received it, decodes back to exactly that title.

Before, the ``email`` package parsed ``=?…?=`` in a title as an encoded word: some titles were
mangled, and ``Build =?utf-8?q?=FF?= failed é`` crashed its header folding with a
``UnicodeEncodeError`` that the channel reported as "unusable address", for good.
"""

from __future__ import annotations

from email import message_from_bytes, policy

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notifier.channels.base import Destination
from notifier.channels.email import EmailChannel
from notifier.schemas.common import MAX_TITLE_CHARS
from notifier.settings import Settings
from tests.channels import make_message
from tests.peers import SmtpPeer

# What the API accepts as a title, but for C1 controls and lone surrogates (which no JSON body
# can carry into a stored row).
titles = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")),
    min_size=1,
    max_size=MAX_TITLE_CHARS,
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(title=titles)
@example(title="Build =?utf-8?q?=FF?= failed é")  # the CPython folding crash
@example(title="Deploy =?utf-8?q?ok?= done")  # an encoded word the parser used to decode
@example(title=" leading and trailing  spaces ")
@example(title="x" * MAX_TITLE_CHARS)  # one long word: nowhere to fold
@example(title="界" * MAX_TITLE_CHARS)
@example(title="Hello Bcc: evil@example.com")
async def test_every_accepted_title_arrives_as_its_subject(smtp_peer: SmtpPeer, title: str) -> None:
    channel = EmailChannel(Settings(**smtp_peer.settings(smtp_timeout_seconds=5.0)))
    message = make_message(title=title)
    try:
        await channel.send(message, Destination(user_id="user-1", email="alice@example.com"))
    finally:
        await channel.aclose()

    message_id = f"<{message.notification_id}@notifier.test>"
    [mail] = [m for m in smtp_peer.messages if m.message["Message-ID"] == message_id]
    received = message_from_bytes(mail.raw, policy=policy.default)
    assert str(received["Subject"]) == title
    assert received.defects == [] and received["Subject"].defects == ()
    head = mail.raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # no SMTPUTF8 needed for a title: the peer need not offer it
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
