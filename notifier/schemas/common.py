"""Field types and limits shared by the request schemas."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 10_000
MAX_METADATA_BYTES = 16_384  # serialized JSON of a notification's metadata
MAX_JSON_FIELD_BYTES = 65_536  # task result / error_details / context, serialized
MAX_URL_CHARS = 2048

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
EARLIEST_DATETIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DATETIME = datetime(9000, 1, 1, tzinfo=UTC)
_ISO_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _single_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (CR, LF, NUL, ...)")
    return value


def _text(value: str) -> str:
    if _CONTROL_BUT_WHITESPACE.search(value):
        raise ValueError("must not contain NUL or other control characters")
    return value


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+", value, re.IGNORECASE):
        raise ValueError("must be an absolute http:// or https:// URL")
    return _single_line(value)


def _iso_8601(value: Any) -> Any:
    # Pydantic would also take a number, or a string of digits, as seconds since 1970: a
    # ``send_at`` of "0" meant 1970-01-01. Only what the document's ``format: date-time`` says.
    if isinstance(value, int | float) or (
        isinstance(value, str) and not _ISO_DATETIME.match(value)
    ):
        raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2030-01-01T09:00:00Z")
    return value


def _representable(value: datetime) -> datetime:
    # Year 1 at +14:00, or 9999-12-31 at -14:00, has no UTC equivalent: converting it (the
    # database driver does, and so does "an hour before until") raised OverflowError, a 500.
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_DATETIME <= utc < LATEST_DATETIME:
        raise ValueError("must be between 1970-01-01 and 9000-01-01 (UTC)")
    return value


def _e164(value: str) -> str:
    if not E164.match(value):
        raise ValueError("must be an E.164 phone number such as +14155550123")
    return value


def _storable_json(value: Any) -> Any:
    """Refuse what JSON columns cannot hold: PostgreSQL's JSONB has no NUL in strings (nor in
    keys) and no NaN or Infinity (Python's JSON parser lets all of them through)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            raise ValueError("must not contain NUL characters (\\u0000)")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return value


def json_size_at_most(limit: int) -> AfterValidator:
    def check(value: Any) -> Any:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > limit:
            raise ValueError(f"must serialize to at most {limit} bytes of JSON (got {size})")
        return value

    return AfterValidator(check)


Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_single_line)
]
ShortName = Annotated[
    str, StringConstraints(min_length=1, max_length=100), AfterValidator(_single_line)
]
Title = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS),
    AfterValidator(_single_line),
]
MessageText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS), AfterValidator(_text)
]
HttpUrlStr = Annotated[str, StringConstraints(max_length=MAX_URL_CHARS), AfterValidator(_http_url)]
PhoneE164 = Annotated[str, AfterValidator(_e164)]
IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_8601), AfterValidator(_representable)]
Metadata = Annotated[
    dict[str, Any], AfterValidator(_storable_json), json_size_at_most(MAX_METADATA_BYTES)
]
JsonObject = Annotated[
    dict[str, Any], AfterValidator(_storable_json), json_size_at_most(MAX_JSON_FIELD_BYTES)
]
