"""One webhook attempt: the signed POST (``attempt``), and what it makes of the delivery
(``decide``, a pure function of the answer, the attempt number and the retry schedule).

    2xx            succeeded
    410 Gone       failed, and the endpoint is disabled ("enabled": false until PATCHed back)
    anything else  (3xx — redirects are never followed —, other 4xx, 5xx, timeout, connection
                   error, an address the SSRF guard refuses, any other exception) retried after
                   the schedule's next pause; past its last entry, failed
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp

from notifier import __version__
from notifier.models.base import utcnow
from notifier.models.webhook import WebhookDeliveryStatus
from notifier.net_guard import is_unsafe_address_error, not_allowed
from notifier.storage.webhook_queue import ClaimedDelivery
from notifier.storage.webhook_record import DeliveryOutcome
from notifier.webhooks.signing import signature_headers

MAX_ERROR_CHARS = 500
# What is read of a receiver's answer (then dropped): enough to reuse the connection for a
# normal answer, never a memory risk for a huge one.
MAX_RESPONSE_BYTES = 64 * 1024
GONE = 410
# Every request's own headers, set once on its session (``http_client``): a request adds only
# its three signature headers, rather than a merged dict of five that aiohttp merges again.
BASE_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": f"notifier-webhooks/{__version__}",
}


def http_client(
    connector: aiohttp.BaseConnector, *, timeout_seconds: float
) -> aiohttp.ClientSession:
    """The HTTP client of one endpoint, over ``connector`` (its keep-alive pool): every request
    sent with ``BASE_HEADERS``, within ``timeout_seconds`` in all (the session's, so no
    request carries its own), redirects never followed (``attempt``)."""
    return aiohttp.ClientSession(
        connector=connector,
        headers=BASE_HEADERS,
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        # A receiver's cookies are never sent back, to it or to another receiver.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


# Not frozen, though nothing changes it once built: a frozen dataclass sets each field through
# ``object.__setattr__``, which cost ~7 us per instance of eight fields, three per event.
@dataclass(slots=True)
class AttemptResult:
    status_code: int | None  # None when no answer came
    error: str | None  # None for a 2xx
    duration_ms: int
    at: datetime  # when the request started (its webhook-timestamp)


async def attempt(http: aiohttp.ClientSession, delivery: ClaimedDelivery) -> AttemptResult:
    """POST the delivery's event over ``http`` (an ``http_client``), signed for this attempt;
    never raises but for cancellation."""
    at = utcnow()
    started = time.monotonic()
    status: int | None = None
    error: str | None
    try:
        body = delivery.body
        headers = signature_headers(str(delivery.event_id), body, delivery.keys, at)
        async with http.post(
            delivery.url, data=body, headers=headers, allow_redirects=False
        ) as response:
            status = response.status
            await response.content.read(MAX_RESPONSE_BYTES)
        error = None if 200 <= status < 300 else _status_error(status, response)
    except TimeoutError:
        error = f"timeout: no answer within {http.timeout.total:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        if is_unsafe_address_error(exc):
            # Not {exc}: aiohttp's message may quote the address the name resolved to.
            error = f"refused: {not_allowed('webhook URL')}"
        else:
            error = f"connection failed: {type(exc).__name__}: {exc}"
    except Exception as exc:  # any other failure is a recorded attempt too, never a crash
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = round((time.monotonic() - started) * 1000)
    return AttemptResult(status, error and error[:MAX_ERROR_CHARS], duration_ms, at)


def _status_error(status: int, response: aiohttp.ClientResponse) -> str:
    if 300 <= status < 400:
        location = response.headers.get("Location")
        return f"HTTP {status}: redirect not followed (Location: {location or '-'})"
    if status == GONE:
        return "HTTP 410: the endpoint is gone; disabled"
    return f"HTTP {status}"


def decide(
    delivery: ClaimedDelivery, result: AttemptResult, schedule: Sequence[float]
) -> DeliveryOutcome:
    """The delivery after ``result``: settled, or retrying after the schedule's pause for this
    attempt (the first failure waits ``schedule[0]``); failed past the schedule's end."""
    attempt_number = delivery.attempts + 1
    disable: str | None = None
    next_at: datetime | None = None
    if result.error is None:
        status = WebhookDeliveryStatus.SUCCEEDED
    elif result.status_code == GONE:
        status = WebhookDeliveryStatus.FAILED
        disable = "the endpoint answered 410 Gone"
    elif attempt_number > len(schedule):
        status = WebhookDeliveryStatus.FAILED
    else:
        status = WebhookDeliveryStatus.RETRYING
        next_at = utcnow() + timedelta(seconds=schedule[attempt_number - 1])
    return DeliveryOutcome(
        delivery=delivery,
        status=status,
        next_attempt_at=next_at,
        status_code=result.status_code,
        error=result.error,
        duration_ms=result.duration_ms,
        at=result.at,
        disable_endpoint=disable,
    )


def interrupted(delivery: ClaimedDelivery, started: datetime) -> DeliveryOutcome:
    """A send the worker gave up on while stopping: the receiver may or may not have it, so it
    is logged as an attempt, and due again at once (at least once)."""
    now = utcnow()
    return DeliveryOutcome(
        delivery=delivery,
        status=WebhookDeliveryStatus.RETRYING,
        next_attempt_at=now,
        status_code=None,
        error="interrupted: the worker stopped before the receiver answered",
        duration_ms=round((now - started).total_seconds() * 1000),
        at=started,
    )
