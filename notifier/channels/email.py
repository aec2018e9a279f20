"""Email over SMTP (aiosmtplib), with a small pool of reused connections.

One message per SMTP transaction, one recipient per message. The transaction is driven command
by command (MAIL, RCPT, DATA) rather than through ``SMTP.sendmail`` so that a failure can be
classified by *where* it happened: a connection lost before DATA means the server has nothing,
one lost inside DATA means it may already have queued the message (``UnknownOutcomeError``).
aiosmtplib's ``SMTP.data()`` sends ``DATA``, waits for 354, writes the content and waits for the
final reply in one call, so a loss inside it cannot be split further; it is reported as unknown,
which is safe because a resend carries the same ``Message-ID`` and is recognisable as a
duplicate.

The message is built, down to its bytes, before any connection is made: a title or text that
cannot be encoded fails the send for good as what it is ("the email could not be built"), never
as an SMTP or address error. The Subject is encoded here rather than by the ``email`` package,
whose header parser reads an ``=?…?=`` in the title as an encoded word to decode (mangling the
title) and whose folder then crashes on some of them (``=?utf-8?q?=FF?=``: a lone surrogate).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.header import Header
from email.message import EmailMessage
from email.utils import parseaddr
from typing import ClassVar, Literal
from urllib.parse import urlsplit

import aiosmtplib

from notifier.channels.base import (
    DeliveryError,
    Destination,
    NotDeliverable,
    OutgoingMessage,
    PermanentError,
    ProviderAuthError,
    SendResult,
    TransientError,
    UnknownOutcomeError,
)
from notifier.channels.email_message import WIRE, WIRE_UTF8, compose_email
from notifier.channels.spec import Address, ChannelSpec
from notifier.models.notification import Channel, ChannelStatus
from notifier.settings import Settings
from notifier.unsubscribe import unsubscribe_url

Stage = Literal["pool", "connect", "auth", "envelope", "data"]
_AUTH_CODES = frozenset({530, 534, 535, 538})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


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


def message_id_for(message: OutgoingMessage, smtp_from: str) -> str:
    """Stable per notification, so a resend after an unknown outcome is recognisable."""
    domain = parseaddr(smtp_from)[1].rpartition("@")[2] or "notifier.invalid"
    return f"<{message.notification_id}@{domain}>"


def build_email(
    message: OutgoingMessage, *, to: str, smtp_from: str, unsubscribe: str | None = None
) -> EmailMessage:
    """The email for one notification: a text part and an HTML alternative (email_message.py);
    the Subject is the template's ``email_subject`` when it has one, else the title."""
    subject = message.parts.get("email_subject") or message.title
    return compose_email(
        message,
        to=to,
        smtp_from=smtp_from,
        # Stored as it goes on the wire: see the module's docstring for why not email["Subject"].
        subject=encode_subject(safe_subject(subject)),
        message_id=message_id_for(message, smtp_from),
        link=safe_link(message.action_url),
        unsubscribe=unsubscribe,
    )


class _Progress:
    """How far one send got; decides what a failure means."""

    def __init__(self) -> None:
        self.stage: Stage = "pool"


def _code_error(code: int, text: str, stage: Stage) -> DeliveryError:
    detail = f"SMTP {code} during {stage}: {text}".strip()
    if code in _AUTH_CODES:
        return ProviderAuthError(detail)
    if 400 <= code < 500:
        return TransientError(detail)
    if 500 <= code < 600:
        return PermanentError(detail)
    return TransientError(detail)


@contextmanager
def _smtp_errors(progress: _Progress) -> Iterator[None]:
    """The one place where aiosmtplib's exceptions become ``DeliveryError``s."""
    try:
        yield
    except DeliveryError:
        raise
    except aiosmtplib.SMTPRecipientsRefused as exc:
        worst = max(exc.recipients, key=lambda r: r.code)
        raise _code_error(worst.code, worst.message, "envelope") from exc
    except aiosmtplib.SMTPResponseException as exc:
        if progress.stage == "auth" and not 400 <= exc.code < 500:
            raise ProviderAuthError(f"SMTP {exc.code}: {exc.message}") from exc
        raise _code_error(exc.code, exc.message, progress.stage) from exc
    except (TimeoutError, ConnectionError, OSError) as exc:
        # Covers SMTPTimeoutError, SMTPServerDisconnected, SMTPConnectError, refused/reset.
        what = "timed out" if isinstance(exc, TimeoutError) else f"connection failed: {exc}"
        if progress.stage == "data":
            raise UnknownOutcomeError(
                f"SMTP {what} after DATA; the server may have the message"
            ) from exc
        raise TransientError(f"SMTP {what} during {progress.stage}") from exc
    except aiosmtplib.SMTPNotSupported as exc:
        raise PermanentError(f"SMTP: {exc}") from exc
    except aiosmtplib.SMTPException as exc:
        if progress.stage == "auth":  # e.g. "SMTP AUTH extension not supported by server"
            raise ProviderAuthError(f"SMTP: {exc}") from exc
        raise TransientError(f"SMTP: {exc}") from exc
    except ValueError as exc:
        if progress.stage != "envelope":
            raise  # not ours to name: an unknown outcome (workers/sending.py)
        # MAIL/RCPT: aiosmtplib refuses addresses with control characters. (The message was
        # built before the envelope, so a content error cannot land here.)
        raise PermanentError(f"unusable address: {exc}") from exc


class EmailChannel:
    name: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, settings: Settings, *, max_connections: int = 4) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._settings = settings
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[aiosmtplib.SMTP] = []
        self._closed = False

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
        sender = parseaddr(settings.smtp_from)[1] or settings.smtp_from
        rcpt = destination.email
        if _CONTROL.search(rcpt):  # stored before the API checked addresses, or by hand
            raise PermanentError("unusable address: it contains control characters")
        needs_utf8 = not (sender.isascii() and rcpt.isascii())
        try:
            email = build_email(
                message,
                to=rcpt,
                smtp_from=settings.smtp_from,
                unsubscribe=unsubscribe_url(settings, message.user_id, message.notification_type),
            )
            payload = email.as_bytes(policy=WIRE_UTF8 if needs_utf8 else WIRE)
        except Exception as exc:  # the same content fails the same way every time
            raise PermanentError(
                f"the email could not be built: {type(exc).__name__}: {exc}"[:1000]
            ) from exc
        progress = _Progress()
        with _smtp_errors(progress):
            # One deadline for the whole send (waiting for a pooled connection included), so a
            # stalled server costs at most smtp_timeout_seconds.
            async with asyncio.timeout(settings.smtp_timeout_seconds), self._slots:
                await self._deliver(payload, sender, rcpt, needs_utf8, progress)
        return SendResult(ChannelStatus.DELIVERED, provider_id=str(email["Message-ID"]))

    async def _deliver(
        self, payload: bytes, sender: str, rcpt: str, needs_utf8: bool, progress: _Progress
    ) -> None:
        for allow_reuse in (True, False):
            smtp = self._idle.pop() if allow_reuse and self._idle else None
            reused = smtp is not None
            if smtp is None or not smtp.is_connected:
                if smtp is not None:
                    smtp.close()
                smtp, reused = await self._connect(progress), False
            try:
                await self._transaction(smtp, payload, sender, rcpt, needs_utf8, progress)
            except aiosmtplib.SMTPServerDisconnected:
                smtp.close()
                # A pooled connection the server dropped while idle fails on MAIL, before the
                # server has anything: retry once on a new connection.
                if reused and progress.stage == "envelope":
                    continue
                raise
            except BaseException:
                # After any failure the session state is uncertain: never reuse it.
                smtp.close()
                raise
            if self._closed:
                await _quit(smtp)
            else:
                self._idle.append(smtp)
            return

    async def _connect(self, progress: _Progress) -> aiosmtplib.SMTP:
        settings = self._settings
        progress.stage = "connect"
        implicit_tls = settings.smtp_port == 465 and not settings.smtp_starttls
        smtp = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            timeout=settings.smtp_timeout_seconds,
            use_tls=implicit_tls,
            start_tls=settings.smtp_starttls,
        )
        await smtp.connect()
        if settings.smtp_username:
            progress.stage = "auth"
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            try:
                await smtp.login(settings.smtp_username, password)
            except BaseException:
                smtp.close()
                raise
        return smtp

    async def _transaction(
        self,
        smtp: aiosmtplib.SMTP,
        payload: bytes,
        sender: str,
        rcpt: str,
        needs_utf8: bool,
        progress: _Progress,
    ) -> None:
        progress.stage = "envelope"
        if smtp.last_ehlo_response is None and smtp.last_helo_response is None:
            await smtp.ehlo()
        if needs_utf8 and not smtp.supports_extension("smtputf8"):
            raise PermanentError("the address needs SMTPUTF8, which the server does not offer")
        encoding = "utf-8" if needs_utf8 else "ascii"
        await smtp.mail(sender, options=["SMTPUTF8"] if needs_utf8 else [], encoding=encoding)
        # One recipient per message, so the "some recipients refused" case of sendmail cannot
        # arise: a refusal raises SMTPRecipientRefused, mapped by its code.
        await smtp.rcpt(rcpt, encoding=encoding)
        progress.stage = "data"
        await smtp.data(payload)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(smtp) for smtp in idle))


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    """Say goodbye politely, but never wait long for a server that does not answer."""
    try:
        async with asyncio.timeout(2.0):
            await smtp.quit()
    except (TimeoutError, OSError, aiosmtplib.SMTPException):
        pass
    finally:
        smtp.close()



def email_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host and settings.smtp_from)


SPEC = ChannelSpec(
    Channel.EMAIL.value, Address.EMAIL, quiet_hours=True, configured=email_configured,
    build=lambda parts: EmailChannel(parts.settings),
)  # fmt: skip
