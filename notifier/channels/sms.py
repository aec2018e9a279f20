"""SMS through Twilio's Messages API, with the SDK's async client.

Twilio's POST is not idempotent: a request whose reply was lost may still have created the
message. Such a send raises ``UnknownOutcomeError``; the next attempt (``after_unknown_outcome``)
first lists the recent messages to that number and adopts the one carrying this notification's
reference (``[ref xxxxxxxx]`` at the end of the body) instead of sending a second SMS.

A reply is "lost" when it never came (a timeout or a dropped connection after the request went
out), when it was a 5xx, and also when it was a 2xx that does not read as a message (not JSON,
as a misbehaving proxy may answer, or no SID): Twilio took the request, and most likely created
the message, but we cannot tell which one.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, timedelta
from types import SimpleNamespace
from typing import Any, ClassVar

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from notifier.channels.base import (
    DeliveryError,
    Destination,
    NotDeliverable,
    OutgoingMessage,
    PermanentError,
    ProviderAuthError,
    RecipientOptedOut,
    SendResult,
    TransientError,
    UnknownOutcomeError,
)
from notifier.channels.retry_after import parse_retry_after
from notifier.channels.spec import Address, ChannelSpec
from notifier.models.notification import Channel, ChannelStatus
from notifier.settings import Settings

# Three GSM-7 segments: long enough for a title and a sentence, short enough to stay cheap.
MAX_SMS_BODY_CHARS = 459
# Where Twilio reports a message's status: the API's route (api/routes/webhooks.py) and the
# callback URL each message carries (``NOTIFIER_PUBLIC_BASE_URL`` + this).
STATUS_WEBHOOK_PATH = "/v1/webhooks/twilio/status"

PERMANENT_CODES: Mapping[int, str] = {
    21211: "invalid 'To' phone number",
    21614: "'To' number is not a mobile number",
    21608: "'To' number is unverified (trial account)",
}
OPTED_OUT_CODE = 21610
THROTTLED_CODES = frozenset({20429, 20503})
AUTH_CODE = 20003

# How far back a message created by an earlier, unconfirmed attempt may be (clock skew included).
_LOOKBACK = timedelta(minutes=5)
_LOOKUP_LIMIT = 50


def sms_reference(message: OutgoingMessage) -> str:
    return f"[ref {message.notification_id.hex[:8]}]"


def build_sms_body(message: OutgoingMessage) -> str:
    """The template's ``sms`` part, else title and message; trimmed to ``MAX_SMS_BODY_CHARS``
    with the reference kept at the end."""
    suffix = " " + sms_reference(message)
    if "sms" in message.parts:
        text = message.parts["sms"]  # as rendered: its line breaks are the author's
    else:
        text = " ".join(message.title.split())
        body = " ".join(message.message.split())
        if body:
            text = f"{text}: {body}" if text else body
    room = MAX_SMS_BODY_CHARS - len(suffix)
    if len(text) > room:
        # "..." rather than an ellipsis character, which would force UCS-2 encoding.
        text = text[: room - 3].rstrip() + "..."
    return text + suffix


def twilio_status_to_channel_status(status: str) -> ChannelStatus | None:
    """Our channel status for a Twilio ``MessageStatus``; None means "no change"."""
    normalized = status.strip().lower()
    if normalized == "delivered":
        return ChannelStatus.DELIVERED
    if normalized in ("undelivered", "failed"):
        return ChannelStatus.FAILED
    return None


def validate_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str
) -> bool:
    """Whether ``X-Twilio-Signature`` matches; ``url`` is the exact public URL Twilio called."""
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, dict(params), signature))


class _Attempt:
    """What one HTTP exchange got to; filled in by aiohttp trace callbacks."""

    def __init__(self) -> None:
        self.request_sent = False
        self.status: int | None = None  # of the response, once its headers arrived
        self.retry_after: float | None = None

    @property
    def answered_2xx(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


# The trace callbacks run inside the task awaiting the request, so a context variable reaches
# the attempt of the very send that triggered them, however many sends run concurrently.
_attempt: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "sms_attempt", default=None
)


async def _on_headers_sent(
    session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    attempt = _attempt.get()
    if attempt is not None:
        attempt.request_sent = True


async def _on_request_end(
    session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
) -> None:
    attempt = _attempt.get()
    if attempt is not None:
        attempt.status = params.response.status
        attempt.retry_after = parse_retry_after(params.response.headers.get("Retry-After"))


def _rest_error(exc: Any, attempt: _Attempt) -> DeliveryError:
    status = int(getattr(exc, "status", 0) or 0)
    raw_code = getattr(exc, "code", None)
    code = raw_code if isinstance(raw_code, int) else None
    text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or str(exc)
    detail = f"Twilio HTTP {status}" + (f" error {code}" if code else "") + f": {text}"
    if code == OPTED_OUT_CODE:
        return RecipientOptedOut(f"Twilio {code}: recipient has opted out (STOP)")
    if code is not None and code in PERMANENT_CODES:
        return PermanentError(f"Twilio {code}: {PERMANENT_CODES[code]}")
    if status == 429 or code in THROTTLED_CODES:
        return TransientError(detail, retry_after=attempt.retry_after)
    if status == 401 or code == AUTH_CODE:
        return ProviderAuthError(detail)
    if 400 <= status < 500:
        return PermanentError(detail)
    if status >= 500:
        return UnknownOutcomeError(detail + " (the message may have been created)")
    return TransientError(detail)


@contextmanager
def _twilio_errors(attempt: _Attempt) -> Iterator[None]:
    """The one place where the SDK's and aiohttp's exceptions become ``DeliveryError``s."""
    token = _attempt.set(attempt)
    try:
        yield
    except DeliveryError:
        raise
    except (TwilioRestException, TwilioServiceException) as exc:
        raise _rest_error(exc, attempt) from exc
    except TwilioException as exc:
        # Listing pages raise a bare TwilioException("Unable to fetch page", response).
        response = exc.args[1] if len(exc.args) > 1 else None
        status = getattr(response, "status_code", 0)
        page_error = SimpleNamespace(status=status, code=None, msg=exc.args[0] if exc.args else "")
        raise _rest_error(page_error, attempt) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
        if attempt.request_sent:
            raise UnknownOutcomeError(
                f"Twilio request {what} after it was sent; the message may exist"
            ) from exc
        raise TransientError(f"Twilio request {what} before it was sent") from exc
    except Exception as exc:
        if not attempt.answered_2xx:
            raise  # not Twilio's answer: an unknown outcome all the same (workers/sending.py)
        # The SDK could not read a success: a body that is not JSON, or not a message.
        raise UnknownOutcomeError(
            f"Twilio answered {attempt.status} with a body that is not a message "
            f"({type(exc).__name__}); the message may exist"
        ) from exc
    finally:
        _attempt.reset(token)


class SmsChannel:
    name: ClassVar[Channel] = Channel.SMS

    def __init__(
        self,
        settings: Settings,
        *,
        status_callback_url: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._settings = settings
        if status_callback_url is None and settings.public_base_url:
            status_callback_url = settings.public_base_url.rstrip("/") + STATUS_WEBHOOK_PATH
        self._status_callback_url = status_callback_url
        self._timeout = timeout_seconds
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None

    @property
    def configured(self) -> bool:
        return sms_configured(self._settings)

    def _get_client(self) -> Client:
        # Built on first use: AsyncTwilioHttpClient opens an aiohttp session, which needs the
        # running loop. No await between the check and the assignment, so no race.
        if self._client is None:
            settings = self._settings
            assert settings.twilio_auth_token is not None
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_on_headers_sent)
            trace.on_request_end.append(_on_request_end)
            # No max_retries: the SDK would re-POST on a 5xx and could send the SMS twice.
            self._http = AsyncTwilioHttpClient(trace_configs=[trace])
            client = Client(
                settings.twilio_account_sid,
                settings.twilio_auth_token.get_secret_value(),
                account_sid=settings.twilio_account_sid,
                http_client=self._http,
            )
            # Our base URL is authoritative: TWILIO_EDGE/TWILIO_REGION in the environment would
            # make the SDK rewrite its host.
            client.edge = None
            client.region = None
            client.api.base_url = settings.twilio_base_url.rstrip("/")
            self._client = client
        return self._client

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        if not self.configured:
            raise NotDeliverable("channel not configured")
        if not destination.phone:
            raise NotDeliverable("no phone number")
        client = self._get_client()
        body = build_sms_body(message)
        if message.after_unknown_outcome:
            sid = await self._find_earlier(client, message, destination.phone)
            if sid is not None:
                return SendResult(ChannelStatus.SENT, provider_id=sid, detail="adopted")
        kwargs: dict[str, Any] = {
            "to": destination.phone,
            "from_": self._settings.twilio_from,
            "body": body,
        }
        if self._status_callback_url:
            kwargs["status_callback"] = self._status_callback_url
        attempt = _Attempt()
        with _twilio_errors(attempt):
            # The SDK passes no timeout to aiohttp (its own setting is ignored): bound it here.
            async with asyncio.timeout(self._timeout):
                created = await client.messages.create_async(**kwargs)
        if not isinstance(created.sid, str) or not created.sid:  # an empty 2xx body reads as {}
            raise UnknownOutcomeError(
                f"Twilio answered {attempt.status} without a message SID; the message may exist"
            )
        return SendResult(ChannelStatus.SENT, provider_id=created.sid)

    async def _find_earlier(
        self, client: Client, message: OutgoingMessage, phone: str
    ) -> str | None:
        """The SID of a message an earlier, unconfirmed attempt created, if there is one."""
        reference = sms_reference(message)
        since = message.created_at.astimezone(UTC) - _LOOKBACK
        try:
            with _twilio_errors(_Attempt()):
                async with asyncio.timeout(self._timeout):
                    # Filtered by To/From only: DateSent is empty while a message is queued,
                    # so a DateSent filter would hide exactly the message we look for.
                    recent = await client.messages.list_async(
                        to=phone, from_=self._settings.twilio_from, limit=_LOOKUP_LIMIT
                    )
        except (TransientError, UnknownOutcomeError) as exc:
            # Sending now could duplicate the SMS: stay in the "unknown" state and look again
            # on the next attempt.
            raise UnknownOutcomeError(f"could not check for an earlier message: {exc}") from exc
        for item in recent:
            created_at = getattr(item, "date_created", None)
            if created_at is not None and created_at < since:
                continue
            if reference in (item.body or ""):
                return str(item.sid)
        return None

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()


def sms_configured(settings: Settings) -> bool:
    return bool(settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from)


SPEC = ChannelSpec(
    Channel.SMS.value, Address.PHONE, quiet_hours=True, configured=sms_configured,
    build=lambda parts: SmsChannel(parts.settings),
)  # fmt: skip
