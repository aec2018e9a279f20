"""Email over SMTP: the message, built once per notification, and handed to the relays
(``smtp_relays.py``: which relay, failover, breakers; ``smtp_session.py``: the connections and
the SMTP transaction, and what each failure means).

The message is built, down to its bytes, before any connection is made: a title or text that
cannot be encoded fails the send for good as what it is ("the email could not be built"), never
as an SMTP or address error. The Subject is encoded here rather than by the ``email`` package,
whose header parser reads an ``=?…?=`` in the title as an encoded word to decode (mangling the
title) and whose folder then crashes on some of them (``=?utf-8?q?=FF?=``: a lone surrogate).
"""

from __future__ import annotations

import re
from email.header import Header
from email.message import EmailMessage
from email.utils import parseaddr
from functools import lru_cache
from typing import ClassVar
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from notifier.channels.base import (
    Destination,
    NotDeliverable,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
)
from notifier.channels.email_message import compose_email
from notifier.channels.email_wire import email_bytes
from notifier.channels.smtp_relays import RelayChain, relay_metrics, relays_from
from notifier.channels.spec import Address, ChannelSpec
from notifier.models.notification import Channel, ChannelStatus
from notifier.settings import Settings
from notifier.unsubscribe import unsubscribe_url

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# Unsubscribe links remembered per channel (one link is ~120 bytes).
_UNSUBSCRIBE_CACHE = 4096


def safe_link(url: str | None) -> str | None:
    """``url`` if it is an absolute http(s) URL without control characters, else None."""
    if not url or _CONTROL.search(url) or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


# Longest header line SMTP's policy writes as it is (RFC 5322 recommends 78 characters).
_HEADER_LINE = 78
# A Subject sent as it is: printable ASCII words, single spaces, nothing that reads as an
# encoded word. Anything else is sent as RFC 2047 encoded words.
_PLAIN_SUBJECT = re.compile(r"[!-~]+( [!-~]+)*")


def safe_subject(title: str) -> str:
    """The title as a Subject: control characters (a CR or LF would let a title inject
    headers) become a space; the rest is kept as it is."""
    return _CONTROL.sub(" ", title)


def encode_subject(subject: str) -> str:
    """The Subject header's value as it goes on the wire: the subject itself if it is plain
    ASCII that fits one line, else UTF-8 encoded words (RFC 2047), folded to lines of at most
    78 characters, which every reader decodes back to exactly ``subject``."""
    if (
        _PLAIN_SUBJECT.fullmatch(subject)
        and "=?" not in subject
        and len("Subject: ") + len(subject) <= _HEADER_LINE
    ):
        return subject
    header = Header(subject, charset="utf-8", header_name="Subject", maxlinelen=_HEADER_LINE)
    return header.encode(linesep="\n")


@lru_cache(maxsize=16)
def _address_of(smtp_from: str) -> str:
    """The addr-spec of the From setting, parsed once (it was a tenth of an email's CPU)."""
    return parseaddr(smtp_from)[1]


def message_id_for(message: OutgoingMessage, smtp_from: str) -> str:
    """Stable per notification, so a resend after an unknown outcome is recognisable."""
    domain = _address_of(smtp_from).rpartition("@")[2] or "notifier.invalid"
    return f"<{message.notification_id}@{domain}>"


def email_subject(message: OutgoingMessage) -> str:
    """The template's ``email_subject`` when it has one, else the title."""
    return message.parts.get("email_subject") or message.title


def build_email(
    message: OutgoingMessage, *, to: str, smtp_from: str, unsubscribe: str | None = None
) -> EmailMessage:
    """The email for one notification: a text part and an HTML alternative (email_message.py);
    the Subject is the template's ``email_subject`` when it has one, else the title."""
    return compose_email(
        message,
        to=to,
        smtp_from=smtp_from,
        # Stored as it goes on the wire: see the module's docstring for why not email["Subject"].
        subject=encode_subject(safe_subject(email_subject(message))),
        message_id=message_id_for(message, smtp_from),
        link=safe_link(message.action_url),
        unsubscribe=unsubscribe,
    )


class EmailChannel:
    name: ClassVar[Channel] = Channel.EMAIL

    def __init__(
        self,
        settings: Settings,
        *,
        max_connections: int | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        # The relays, their connections and breakers (docs/architecture.md, "Email relays").
        self._relays = RelayChain(
            relays_from(settings),
            timeout=settings.smtp_timeout_seconds,
            pause_seconds=settings.breaker_seconds,
            max_connections=(
                settings.smtp_max_connections if max_connections is None else max_connections
            ),
            metrics=relay_metrics(metrics_registry),
        )
        # The unsubscribe link of each (user, type), signed once: an HMAC per email was a
        # tenth of the channel's CPU, and a user's emails come again and again. Bounded.
        self._unsubscribe: dict[tuple[str, str], str | None] = {}
        self._closed = False

    def _unsubscribe_url(self, message: OutgoingMessage) -> str | None:
        key = (message.user_id, message.notification_type)
        try:
            return self._unsubscribe[key]
        except KeyError:
            pass
        if len(self._unsubscribe) >= _UNSUBSCRIBE_CACHE:
            self._unsubscribe.clear()
        url = self._unsubscribe[key] = unsubscribe_url(self._settings, *key)
        return url

    @property
    def configured(self) -> bool:
        return email_configured(self._settings)

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        settings = self._settings
        if not settings.smtp_host or not settings.smtp_from:
            raise NotDeliverable("channel not configured")
        if not destination.email:
            raise NotDeliverable("no email address")
        if self._closed:
            raise TransientError("email channel is closed")
        sender = _address_of(settings.smtp_from) or settings.smtp_from
        rcpt = destination.email
        if _CONTROL.search(rcpt):  # stored before the API checked addresses, or by hand
            raise PermanentError("unusable address: it contains control characters")
        needs_utf8 = not (sender.isascii() and rcpt.isascii())
        message_id = message_id_for(message, settings.smtp_from)
        try:
            # Written straight to bytes (email_wire.py): the email package's object and
            # generator were most of the worker's CPU per email (docs/architecture.md, "Templates").
            payload = email_bytes(
                message,
                to=rcpt,
                smtp_from=settings.smtp_from,
                subject=encode_subject(safe_subject(email_subject(message))),
                message_id=message_id,
                link=safe_link(message.action_url),
                unsubscribe=self._unsubscribe_url(message),
                utf8=needs_utf8,
            )
        except Exception as exc:  # the same content fails the same way every time
            raise PermanentError(
                f"the email could not be built: {type(exc).__name__}: {exc}"[:1000]
            ) from exc
        relay = await self._relays.send(payload, sender, rcpt, needs_utf8)
        # Which relay took it, then the Message-ID a resend repeats (README "Email relays").
        return SendResult(ChannelStatus.DELIVERED, provider_id=f"{relay} {message_id}")

    async def aclose(self) -> None:
        self._closed = True
        await self._relays.aclose()


def email_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host and settings.smtp_from)


SPEC = ChannelSpec(
    Channel.EMAIL.value, Address.EMAIL, quiet_hours=True, configured=email_configured,
    build=lambda parts: EmailChannel(parts.settings, metrics_registry=parts.metrics_registry),
)  # fmt: skip
