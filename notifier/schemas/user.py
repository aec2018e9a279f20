"""Recipient, user token and push subscription schemas."""

from __future__ import annotations

import functools
import re
import uuid
import zoneinfo
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from notifier.schemas.common import (
    EMAIL_DESCRIPTION,
    EndpointUrl,
    JsonObject,
    PhoneE164,
    WholeNumber,
)

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


@functools.cache
def iana_time_zones() -> tuple[str, ...]:
    """The zone names this machine's time zone database knows, as the document lists them
    (``localtime`` is this machine's own zone, not a name to store)."""
    return tuple(sorted(zoneinfo.available_timezones() - {"localtime"}))


def _timezone(value: str) -> str:
    if value not in iana_time_zones():
        raise ValueError("must be an IANA time zone such as Europe/Berlin")
    return value


class _TimeZoneNames:
    """The schema of a time zone: the list of names, read when the document is built."""

    @staticmethod
    def __get_pydantic_json_schema__(
        schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "enum": list(iana_time_zones())}


TimeZoneName = Annotated[str, AfterValidator(_timezone), _TimeZoneNames()]


class QuietHours(BaseModel):
    """A daily window, in the recipient's time zone, in which only urgent notifications go out
    on email, SMS and push. ``defer`` holds them until the window ends instead of skipping."""

    model_config = ConfigDict(extra="forbid")
    start: Annotated[str, StringConstraints(pattern=_HHMM.pattern)]
    end: Annotated[str, StringConstraints(pattern=_HHMM.pattern)]
    # strict: JSON true/false only (lax validation took 0 for false).
    defer: Annotated[bool, Field(strict=True)] = False


class _RecipientFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr | None = Field(default=None, description=EMAIL_DESCRIPTION)
    phone: PhoneE164 | None = None
    locale: (
        Annotated[
            str,
            # A BCP 47 tag; 35 characters is the column (and RFC 5646's advice).
            StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"),
        ]
        | None
    ) = None
    timezone: TimeZoneName | None = None
    quiet_hours: QuietHours | None = None


class RecipientUpsert(_RecipientFields):
    preferences: JsonObject = Field(default_factory=dict)


class RecipientPatch(_RecipientFields):
    """The fields of ``RecipientUpsert``: only those sent change, and ``null`` clears one
    (``preferences`` back to ``{}``)."""

    preferences: JsonObject | None = None


class RecipientPublic(BaseModel):
    user_id: str
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    preferences: dict[str, Any]
    quiet_hours: QuietHours | None
    sms_opted_out: bool
    created_at: AwareDatetime
    updated_at: AwareDatetime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600), WholeNumber] | None = None


class TokenPublic(BaseModel):
    token: str
    expires_at: AwareDatetime


_B64URL = r"^[A-Za-z0-9_-]+={0,2}$"


class PushKeys(BaseModel):
    model_config = ConfigDict(extra="ignore")
    p256dh: Annotated[str, StringConstraints(min_length=16, max_length=256, pattern=_B64URL)]
    auth: Annotated[str, StringConstraints(min_length=8, max_length=64, pattern=_B64URL)]


class PushSubscriptionCreate(BaseModel):
    """A browser ``PushSubscription.toJSON()``; ``expirationTime`` is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    endpoint: Annotated[
        EndpointUrl,
        StringConstraints(min_length=8),
        Field(
            description="The browser's push service URL: https, with a host that resolves to "
            "public addresses only (checked when stored and before each push; a server with "
            "NOTIFIER_PUSH_ALLOW_PRIVATE_ENDPOINTS also takes http and private addresses).",
            json_schema_extra={"format": "push-endpoint"},
        ),
    ]
    keys: PushKeys


class PushSubscriptionPublic(BaseModel):
    id: uuid.UUID
    user_id: str
    endpoint: str
    created_at: AwareDatetime


class VapidPublicKey(BaseModel):
    public_key: str
