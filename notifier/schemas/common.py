"""Field types and limits shared by the request schemas."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints

MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 10_000
MAX_METADATA_BYTES = 16_384  # serialized JSON of a notification's metadata
MAX_JSON_FIELD_BYTES = 65_536  # task result / error_details / context, serialized
MAX_URL_CHARS = 2048

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


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


def _e164(value: str) -> str:
    if not E164.match(value):
        raise ValueError("must be an E.164 phone number such as +14155550123")
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
Metadata = Annotated[dict[str, Any], json_size_at_most(MAX_METADATA_BYTES)]
JsonObject = Annotated[dict[str, Any], json_size_at_most(MAX_JSON_FIELD_BYTES)]
