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
from collections.abc import Iterator
from contextlib import contextmanager
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
# ``<address>`` as aiosmtplib's MAIL and RCPT write it (email.utils' parse of the address).
_quoted = functools.lru_cache(maxsize=4096)(quote_address)
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


@contextmanager
def smtp_errors(progress: Progress) -> Iterator[None]:
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
        with smtp_errors(progress):
            async with asyncio.timeout(self._timeout):
                await self._deliver(payload, sender, rcpt, needs_utf8, progress)

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
        # SMTP.mail and SMTP.rcpt, but for the address: aiosmtplib parses it anew with
        # email.utils on every command (a tenth of the worker's CPU per email); the same few
        # senders and recipients come back, so their quoted forms are cached.
        options = (b"SMTPUTF8",) if needs_utf8 else ()
        mail_from = b"FROM:" + _quoted(sender).encode(encoding)
        reply = await smtp.execute_command(b"MAIL", mail_from, *options)
        if reply.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        # One recipient per message, so the "some recipients refused" case of sendmail cannot
        # arise: a refusal raises SMTPRecipientRefused, mapped by its code.
        reply = await smtp.execute_command(b"RCPT", b"TO:" + _quoted(rcpt).encode(encoding))
        if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, rcpt)
        progress.stage = "data"
        await smtp.data(payload)

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
