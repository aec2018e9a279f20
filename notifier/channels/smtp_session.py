"""One SMTP relay's connections: a pool of reused ones, one transaction at a time on each, and
the translation of aiosmtplib's exceptions into ``DeliveryError``s.

One message per SMTP transaction, one recipient per message. The transaction is driven command
by command (MAIL, RCPT, DATA) rather than through ``SMTP.sendmail`` so that a failure can be
classified by *where* it happened: a connection lost before DATA means the server has nothing,
one lost inside DATA means it may already have queued the message (``UnknownOutcomeError``).
aiosmtplib's ``SMTP.data()`` sends ``DATA``, waits for 354, writes the content and waits for the
final reply in one call, so a loss inside it cannot be split further; it is reported as unknown,
which is safe because a resend carries the same ``Message-ID`` and is recognisable as a
duplicate. Which relay is tried, and when, is ``smtp_relays.py``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPStatus
from aiosmtplib.email import quote_address

from notifier.channels.base import (
    DeliveryError,
    PermanentError,
    ProviderAuthError,
    TransientError,
    UnknownOutcomeError,
)
from notifier.smtp_urls import SmtpRelay

Stage = Literal["pool", "connect", "auth", "envelope", "data"]
_AUTH_CODES = frozenset({530, 534, 535, 538})


class Progress:
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


def smtp_error(exc: Exception, progress: Progress) -> DeliveryError | None:
    """The one place where aiosmtplib's exceptions become ``DeliveryError``s: the error that
    ``exc`` raised at ``progress.stage`` means, or None when it is not ours to name (it then
    propagates as it is: an unknown outcome for workers/sending.py)."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        worst = max(exc.recipients, key=lambda r: r.code)
        return _code_error(worst.code, worst.message, "envelope")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if progress.stage == "auth" and not 400 <= exc.code < 500:
            return ProviderAuthError(f"SMTP {exc.code}: {exc.message}")
        return _code_error(exc.code, exc.message, progress.stage)
    if isinstance(exc, (TimeoutError, ConnectionError, OSError)):
        # Covers SMTPTimeoutError, SMTPServerDisconnected, SMTPConnectError, refused/reset.
        what = "timed out" if isinstance(exc, TimeoutError) else f"connection failed: {exc}"
        if progress.stage == "data":
            return UnknownOutcomeError(f"SMTP {what} after DATA; the server may have the message")
        return TransientError(f"SMTP {what} during {progress.stage}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentError(f"SMTP: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        if progress.stage == "auth":  # e.g. "SMTP AUTH extension not supported by server"
            return ProviderAuthError(f"SMTP: {exc}")
        return TransientError(f"SMTP: {exc}")
    if isinstance(exc, ValueError) and progress.stage == "envelope":
        # MAIL/RCPT: aiosmtplib refuses addresses with control characters. (The message was
        # built before the envelope, so a content error cannot land here.)
        return PermanentError(f"unusable address: {exc}")
    return None


@functools.lru_cache(maxsize=4096)
def _envelope_argument(prefix: bytes, address: str, encoding: str) -> bytes:
    """``FROM:<address>`` or ``TO:<address>`` as aiosmtplib's MAIL and RCPT write them
    (email.utils' parse of the address), built once per address: aiosmtplib parses the
    address anew on every command, a tenth of the worker's CPU per email, and the same few
    senders and recipients come back."""
    return prefix + quote_address(address).encode(encoding)


class RelayConnections:
    """The idle connections to one relay, and one message sent through it."""

    def __init__(self, relay: SmtpRelay, *, timeout: float) -> None:
        self.relay = relay
        self._timeout = timeout
        self._idle: list[aiosmtplib.SMTP] = []
        self._closed = False

    async def send(self, payload: bytes, sender: str, rcpt: str, needs_utf8: bool) -> None:
        """Deliver one message, or raise the ``DeliveryError`` saying why not. One deadline of
        ``NOTIFIER_SMTP_TIMEOUT_SECONDS`` for the relay, from connecting to the final reply."""
        progress = Progress()
        progress.stage = "connect"
        try:
            async with asyncio.timeout(self._timeout):
                await self._deliver(payload, sender, rcpt, needs_utf8, progress)
        except Exception as exc:
            error = smtp_error(exc, progress)
            if error is None or error is exc:
                raise
            raise error from exc

    async def _deliver(
        self, payload: bytes, sender: str, rcpt: str, needs_utf8: bool, progress: Progress
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
                await quit_politely(smtp)
            else:
                self._idle.append(smtp)
            return

    async def _connect(self, progress: Progress) -> aiosmtplib.SMTP:
        relay = self.relay
        progress.stage = "connect"
        smtp = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            timeout=self._timeout,
            use_tls=relay.implicit_tls,
            start_tls=relay.starttls,
        )
        await smtp.connect()
        if relay.username:
            progress.stage = "auth"
            password = relay.password.get_secret_value() if relay.password else ""
            try:
                await smtp.login(relay.username, password)
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
        progress: Progress,
    ) -> None:
        progress.stage = "envelope"
        if smtp.last_ehlo_response is None and smtp.last_helo_response is None:
            await smtp.ehlo()
        if needs_utf8 and not smtp.supports_extension("smtputf8"):
            raise PermanentError("the address needs SMTPUTF8, which the server does not offer")
        encoding = "utf-8" if needs_utf8 else "ascii"
        # SMTP.mail, SMTP.rcpt and SMTP.data without their own timeouts: the deadline of
        # ``send`` bounds the whole transaction already, and aiosmtplib's per-command
        # ``wait_for`` cost a timer and a future per command (bench/RESULTS.md, "Email
        # channel A/B"). A deadline that ends inside a command cancels it; the connection is
        # then closed, as after any failure.
        options = (b"SMTPUTF8",) if needs_utf8 else ()
        mail_from = _envelope_argument(b"FROM:", sender, encoding)
        reply = await smtp.execute_command(b"MAIL", mail_from, *options, timeout=None)
        if reply.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        # One recipient per message, so the "some recipients refused" case of sendmail cannot
        # arise: a refusal raises SMTPRecipientRefused, mapped by its code.
        rcpt_to = _envelope_argument(b"TO:", rcpt, encoding)
        reply = await smtp.execute_command(b"RCPT", rcpt_to, timeout=None)
        if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, rcpt)
        progress.stage = "data"
        await smtp.data(payload, timeout=None)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(quit_politely(smtp) for smtp in idle))


async def quit_politely(smtp: aiosmtplib.SMTP) -> None:
    """Say goodbye politely, but never wait long for a server that does not answer."""
    try:
        async with asyncio.timeout(2.0):
            await smtp.quit()
    except (TimeoutError, OSError, aiosmtplib.SMTPException):
        pass
    finally:
        smtp.close()
