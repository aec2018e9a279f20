"""Outbound webhook endpoint schemas: what a producer sends and what it reads back. The secret
appears in ``WebhookEndpointCreated`` and ``SecretRotated`` only — once, when it is made."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from notifier.models.webhook import WebhookAttempt, WebhookEndpoint
from notifier.schemas.common import EndpointUrl, IsoDatetime
from notifier.webhooks.events import ALL_EVENTS, EVENT_TYPES, WebhookEventType


def _known_event_type(value: str) -> str:
    if value != ALL_EVENTS and value not in EVENT_TYPES:
        known = ", ".join(sorted(EVENT_TYPES))
        raise ValueError(f"unknown event type {value!r}; known: {known}, or {ALL_EVENTS!r}")
    return value


def _without_repeats(value: list[str]) -> list[str]:
    return list(dict.fromkeys(value))  # in the order given


# Checked one by one (the error names the item), and published as the enum they are.
EventType = Annotated[
    str,
    AfterValidator(_known_event_type),
    WithJsonSchema({"type": "string", "enum": [*sorted(EVENT_TYPES), ALL_EVENTS]}),
]
EventFilter = Annotated[
    list[EventType],
    Field(min_length=1, max_length=len(WebhookEventType) + 1),
    AfterValidator(_without_repeats),
]
Description = Annotated[
    str, StringConstraints(max_length=500, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")
]


URL_DESCRIPTION = (
    "where the events are POSTed: its host must resolve to public addresses only (unless "
    "NOTIFIER_WEBHOOK_ALLOW_PRIVATE_ENDPOINTS)"
)


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: EndpointUrl = Field(description=URL_DESCRIPTION)
    events: EventFilter = Field(
        description='event types to receive, or ["*"] for every type',
        examples=[["notification.delivered", "notification.failed"]],
    )
    description: Description | None = None


class WebhookEndpointUpdate(BaseModel):
    """Only the fields sent change; ``"enabled": true`` re-enables after a 410."""

    model_config = ConfigDict(extra="forbid")
    url: EndpointUrl | None = Field(default=None, description=URL_DESCRIPTION)
    events: EventFilter | None = None
    description: Description | None = None
    enabled: bool | None = None


class WebhookEndpointPublic(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="why it was disabled (a 410, a request)")
    previous_secret_expires_at: AwareDatetime | None = Field(
        description="until when the secret replaced by the last rotation still signs"
    )
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @classmethod
    def from_row(cls, row: WebhookEndpoint) -> WebhookEndpointPublic:
        return cls(
            id=row.id,
            url=row.url,
            events=row.events,
            description=row.description,
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            previous_secret_expires_at=row.previous_secret_expires_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class WebhookEndpointCreated(WebhookEndpointPublic):
    secret: str = Field(
        description="whsec_<base64>: shown this once; receivers verify signatures with it"
    )


class WebhookEndpointList(BaseModel):
    items: list[WebhookEndpointPublic]


class SecretRotated(BaseModel):
    secret: str = Field(description="the new whsec_ secret, shown this once")
    previous_secret_expires_at: AwareDatetime = Field(
        description="the old secret signs too (a second v1 signature) until then"
    )


class WebhookAttemptPublic(BaseModel):
    event_id: uuid.UUID
    type: str
    status_code: int | None = Field(description="the receiver's answer; null if none came")
    error: str | None
    attempt: int
    duration_ms: int
    at: AwareDatetime

    @classmethod
    def from_row(cls, row: WebhookAttempt) -> WebhookAttemptPublic:
        return cls(
            event_id=row.event_id,
            type=row.event_type,
            status_code=row.status_code,
            error=row.error,
            attempt=row.attempt,
            duration_ms=row.duration_ms,
            at=row.at,
        )


class WebhookAttemptList(BaseModel):
    items: list[WebhookAttemptPublic]


class QueuedTestEvent(BaseModel):
    event_id: uuid.UUID


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: IsoDatetime


class ReplayQueued(BaseModel):
    queued: int = Field(description="deliveries queued again (or for the first time)")
