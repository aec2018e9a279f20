"""Email over SMTP (aiosmtplib), with a small pool of reused connections.

One message per SMTP transaction, one recipient per message. The transaction is driven command
by command (MAIL, RCPT, DATA) rather than through ``SMTP.sendmail`` so that a failure can be
classified by *where* it happened: a connection lost before DATA means the server has nothing,
one lost inside DATA means it may already have queued the message (``UnknownOutcomeError``).
aiosmtplib's ``SMTP.data()`` sends ``DATA``, waits for 354, writes the content and waits for the
final reply in one call, so a loss inside it cannot be split further; it is reported as unknown,
which is safe because a resend carries the same ``Message-ID`` and is recognisable as a
duplicate.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
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
from notifier.models.base import utcnow
from notifier.models.notification import Channel, ChannelStatus
from notifier.settings import Settings

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


def safe_subject(title: str) -> str:
    # A CR or LF in a header would let a title inject headers; collapse all whitespace runs.
    return " ".join(_CONTROL.sub(" ", title).split())


def message_id_for(message: OutgoingMessage, smtp_from: str) -> str:
    """Stable per notification, so a resend after an unknown outcome is recognisable."""
    domain = parseaddr(smtp_from)[1].rpartition("@")[2] or "notifier.invalid"
    return f"<{message.notification_id}@{domain}>"


def build_email(message: OutgoingMessage, *, to: str, smtp_from: str) -> EmailMessage:
    """The email for one notification: a text part and an HTML alternative."""
    link = safe_link(message.action_url)
    text = f"{message.title}\n\n{message.message}\n"
    if link:
        text += f"\n{link}\n"
    body_html = "<br>\n".join(html.escape(line) for line in message.message.splitlines())
    parts = [
        "<!doctype html>",
        '<html><body style="font-family: sans-serif">',
        f"<h2>{html.escape(message.title)}</h2>",
        f"<p>{body_html}</p>",
    ]
    if link:
        parts.append(f'<p><a href="{html.escape(link, quote=True)}">Open</a></p>')
    parts.append("</body></html>")

    email = EmailMessage()
    email["Subject"] = safe_subject(message.title)
    email["From"] = smtp_from
    email["To"] = to
    email["Date"] = format_datetime(utcnow())
    email["Message-ID"] = message_id_for(message, smtp_from)
    email["X-Notifier-Notification-Id"] = str(message.notification_id)
    # RFC 3834: tells auto-responders not to answer a notification.
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(text)
    email.add_alternative("\n".join(parts) + "\n", subtype="html")
    return email


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
    except ValueError as exc:  # aiosmtplib refuses addresses with control characters
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
        return self._settings.email_configured

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        settings = self._settings
        if not settings.smtp_host or not settings.smtp_from:
            raise NotDeliverable("channel not configured")
        if not destination.email:
            raise NotDeliverable("no email address")
        if self._closed:
            raise TransientError("email channel is closed")
        email = build_email(message, to=destination.email, smtp_from=settings.smtp_from)
        sender = parseaddr(settings.smtp_from)[1] or settings.smtp_from
        progress = _Progress()
        with _smtp_errors(progress):
            # One deadline for the whole send (waiting for a pooled connection included), so a
            # stalled server costs at most smtp_timeout_seconds.
            async with asyncio.timeout(settings.smtp_timeout_seconds), self._slots:
                await self._deliver(email, sender, destination.email, progress)
        return SendResult(ChannelStatus.DELIVERED, provider_id=str(email["Message-ID"]))

    async def _deliver(
        self, email: EmailMessage, sender: str, rcpt: str, progress: _Progress
    ) -> None:
        for allow_reuse in (True, False):
            smtp = self._idle.pop() if allow_reuse and self._idle else None
            reused = smtp is not None
            if smtp is None or not smtp.is_connected:
                if smtp is not None:
                    smtp.close()
                smtp, reused = await self._connect(progress), False
            try:
                await self._transaction(smtp, email, sender, rcpt, progress)
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
        email: EmailMessage,
        sender: str,
        rcpt: str,
        progress: _Progress,
    ) -> None:
        progress.stage = "envelope"
        if smtp.last_ehlo_response is None and smtp.last_helo_response is None:
            await smtp.ehlo()
        needs_utf8 = not (sender.isascii() and rcpt.isascii())
        if needs_utf8 and not smtp.supports_extension("smtputf8"):
            raise PermanentError("the address needs SMTPUTF8, which the server does not offer")
        encoding = "utf-8" if needs_utf8 else "ascii"
        await smtp.mail(sender, options=["SMTPUTF8"] if needs_utf8 else [], encoding=encoding)
        # One recipient per message, so the "some recipients refused" case of sendmail cannot
        # arise: a refusal raises SMTPRecipientRefused, mapped by its code.
        await smtp.rcpt(rcpt, encoding=encoding)
        payload = email.as_bytes(policy=policy.SMTPUTF8 if needs_utf8 else policy.SMTP)
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
