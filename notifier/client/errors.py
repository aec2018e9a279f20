"""The client's one error: ``NotifierError``, an error answer from the service, and how a
``Retry-After`` header is read."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import httpx


class NotifierError(Exception):
    """An error answer from the service (or a response that is not the service's JSON).

    ``status`` is the HTTP status; ``code``, ``message`` and ``details`` come from the body
    ``{"error": {"code", "message", "details"}}`` (``code`` is ``"http_error"`` when the body is
    not in that form). ``retry_after`` holds the seconds of a ``Retry-After`` header, if any.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> NotifierError:
        code, message, details = "http_error", response.reason_phrase or "error", None
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
            details = error.get("details")
        return cls(
            response.status_code,
            code,
            message,
            details,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
