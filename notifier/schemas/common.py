"""Field types and limits shared by the request schemas.

Each type validates exactly what its JSON Schema says, so that the published OpenAPI document
describes what the API accepts: a string type's ``pattern`` is the regular expression its
validator applies (ECMA-262 and Python read these alike), and a date-time's range is written
into its pattern. Two rules hold for every string the API stores, and no schema spells the
second: no NUL (PostgreSQL's text cannot hold it: a NUL in a push endpoint was a 500) and no
lone UTF-16 surrogate (JSON can carry ``"\\ud800"``, UTF-8 cannot encode it, and no database
driver stores it). JSON Schema strings are Unicode text, in which a lone surrogate does not
exist.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 10_000
MAX_METADATA_BYTES = 16_384  # serialized JSON of a notification's metadata
MAX_JSON_FIELD_BYTES = 65_536  # task result / error_details / context, serialized
MAX_URL_CHARS = 2048

# What each kind of text refuses, as the character class of its pattern.
SINGLE_LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # ids, titles, names: no control character
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # messages: tab, LF and CR allowed
STORABLE_PATTERN = r"^[^\x00]*$"  # anything else stored: no NUL
# An absolute http(s) URL with a host, on one line.
HTTP_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f/?#]+[^\x00-\x1f\x7f]*$"
# A URL the service itself connects to (a push endpoint, a webhook receiver): http(s), a host
# that is an ASCII name (labels of at most 63 characters, what the IDNA codec and the resolver
# take: a longer label was a 500) or a bracketed IPv6 address, an optional port up to 65535, no
# credentials. Plain http and private addresses are then the server's policy to refuse
# (NOTIFIER_PUSH_ALLOW_PRIVATE_ENDPOINTS, NOTIFIER_WEBHOOK_ALLOW_PRIVATE_ENDPOINTS).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:(?:{_LABEL}\.)*{_LABEL}|\[[0-9A-Fa-f:.]{{2,45}}\])"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
ENDPOINT_URL_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://{_HOST}(?::{_PORT})?(?:[/?#][^\x00-\x1f\x7f]*)?$"
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
# An RFC 3339 date-time in the years 1970 to 8999 as written: whatever its offset, it has a UTC
# equivalent the databases and the drivers can hold (year 1 at +14:00 has none: an
# OverflowError, a 500).
# Seconds are required (RFC 3339 has them) and 60 is refused (Python has no leap second).
DATETIME_PATTERN = (
    r"^(19[7-9][0-9]|[2-8][0-9]{3})-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-5][0-9]"
)
EARLIEST_YEAR, LATEST_YEAR = 1970, 8999
STORABLE_JSON_REF = "#/components/schemas/StorableJson"
# What ``format: email`` leaves to the validator (email-validator, no DNS lookup).
EMAIL_DESCRIPTION = (
    "an email address as email-validator takes it: special-use or reserved domains "
    "(.local, .test, .invalid, .arpa, ...) and quoted local parts are refused"
)

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NUL = re.compile(r"\x00")
_DATETIME = re.compile(DATETIME_PATTERN)


@functools.cache
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` as JSON Schema reads it: ECMA-262's ``$`` is the very end of the string,
    Python's also matches before a final newline."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


@dataclass(frozen=True, slots=True)
class TextRule:
    """A string refused (with ``message``) unless it matches ``pattern``, which is published in
    the string's JSON Schema, or if it holds a lone surrogate (Pydantic refuses one only where
    it hands the string to its Rust side, for a length or a pattern; not always)."""

    pattern: str
    message: str

    def check(self, value: str) -> str:
        if not ecma_regex(self.pattern).search(value):
            raise ValueError(self.message)
        if _SURROGATE.search(value):
            raise ValueError("must be valid Unicode text (no lone surrogate such as \\ud800)")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


SINGLE_LINE = TextRule(
    SINGLE_LINE_PATTERN, "must not contain control characters (CR, LF, NUL, ...)"
)
TEXT = TextRule(TEXT_PATTERN, "must not contain NUL or other control characters")
STORABLE = TextRule(STORABLE_PATTERN, "must not contain NUL characters (\\u0000)")

# A string stored as it is, with no other rule (a stack trace, an error message).
StorableText = Annotated[str, STORABLE]


_DATETIME_MESSAGE = (
    "must be an RFC 3339 date-time with an offset, in the years 1970 to 8999, "
    "e.g. 2030-01-01T09:00:00Z"
)


def _iso_8601(value: Any) -> Any:
    # Pydantic would also take a number, or a string of digits, as seconds since 1970: a
    # ``send_at`` of "0" meant 1970-01-01. Only what the document's pattern says (a datetime
    # object comes from our own code, and has its range checked below).
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _DATETIME.search(value):
        raise ValueError(_DATETIME_MESSAGE)
    return value


def _in_range(value: datetime) -> datetime:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(_DATETIME_MESSAGE)
    return value


def _storable_json(value: Any) -> Any:
    """Refuse what JSON columns cannot hold: PostgreSQL's JSONB has no NUL in strings (nor in
    keys) and no NaN or Infinity (Python's JSON parser lets all of them through), and no
    database driver encodes a lone surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _NUL.search(item):
                raise ValueError("must not contain NUL characters (\\u0000)")
            if _SURROGATE.search(item):
                raise ValueError("must be valid Unicode text (no lone surrogate such as \\ud800)")
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


def _whole_number(value: Any) -> Any:
    # JSON Schema's "integer" is any number with a zero fraction (34261.0 included); a bool or
    # a string is not one (Pydantic's lax mode took true for 1 and "3600" for 3600).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


# ``Annotated[int, WholeNumber, Field(ge=..., le=...)]``: an integer as JSON Schema means it.
WholeNumber = BeforeValidator(_whole_number)

# A JSON object (the free-form fields: metadata, task_metadata, result, context, preferences),
# described by the ``StorableJson`` component that notifier/api/openapi.py publishes.
_STORABLE_OBJECT_SCHEMA = WithJsonSchema(
    {
        "type": "object",
        "propertyNames": {"pattern": STORABLE_PATTERN},
        "additionalProperties": {"$ref": STORABLE_JSON_REF},
    }
)

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=255), SINGLE_LINE]
ShortName = Annotated[str, StringConstraints(min_length=1, max_length=100), SINGLE_LINE]
Title = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS), SINGLE_LINE]
MessageText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS), TEXT]
HttpUrlStr = Annotated[
    str,
    StringConstraints(max_length=MAX_URL_CHARS),
    TextRule(HTTP_URL_PATTERN, "must be an absolute http:// or https:// URL on one line"),
]
EndpointUrl = Annotated[
    str,
    StringConstraints(max_length=MAX_URL_CHARS),
    TextRule(ENDPOINT_URL_PATTERN, "must be an http(s) URL with a host name, on one line"),
]
PhoneE164 = Annotated[
    str, TextRule(E164_PATTERN, "must be an E.164 phone number such as +14155550123")
]
IsoDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_8601),
    AfterValidator(_in_range),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN}),
]
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_storable_json),
    json_size_at_most(MAX_METADATA_BYTES),
    _STORABLE_OBJECT_SCHEMA,
]
JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(_storable_json),
    json_size_at_most(MAX_JSON_FIELD_BYTES),
    _STORABLE_OBJECT_SCHEMA,
]

# Any JSON value whose strings and keys hold no NUL: the free-form fields' values.
STORABLE_JSON_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value; no string or object key in it may contain NUL (\\u0000).",
    "anyOf": [
        {"type": "string", "pattern": STORABLE_PATTERN},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": STORABLE_JSON_REF}},
        {
            "type": "object",
            "propertyNames": {"pattern": STORABLE_PATTERN},
            "additionalProperties": {"$ref": STORABLE_JSON_REF},
        },
    ],
}
