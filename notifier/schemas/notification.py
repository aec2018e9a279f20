"""Notification request and response schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import PlainValidator
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema

from notifier.models.notification import (
    Channel,
    ChannelStatus,
    Notification,
    NotificationStatus,
    NotificationType,
    Priority,
)
from notifier.schemas.channels import ChannelName, StoredChannelName, channel_list_schema
from notifier.schemas.common import (
    EMAIL_DESCRIPTION,
    HttpUrlStr,
    Identifier,
    IsoDatetime,
    JsonObject,
    MessageText,
    Metadata,
    PhoneE164,
    Title,
)
from notifier.schemas.delivery_plan import (
    DigestSpec,
    Escalation,
    EscalationStep,
    PlanKey,
    ThrottleSpec,
    check_escalation,
    plan_of,
)
from notifier.schemas.template import LOCALE_TAG_PATTERN, TEMPLATE_KEY_PATTERN, locale_tag
from notifier.templates.locales import MAX_TAG_CHARS

MAX_BATCH = 1000


class RecipientOverride(BaseModel):
    """Addresses for this notification only, instead of the stored recipient's."""

    model_config = ConfigDict(extra="forbid")
    email: EmailStr | None = Field(default=None, description=EMAIL_DESCRIPTION)
    phone: PhoneE164 | None = None


def _optional_locale(value: Any) -> str | None:
    if value is None:  # the default (an explicit null is refused by _no_nulls)
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return locale_tag(value)


# A locale tag or nothing, without a union: a union with None refused a tag Babel does not
# know twice, once as "not a locale Babel knows" and once as "not None".
OptionalLocale = Annotated[
    str | None,
    PlainValidator(_optional_locale),
    WithJsonSchema({"type": "string", "maxLength": MAX_TAG_CHARS, "pattern": LOCALE_TAG_PATTERN}),
]
TemplateKey = Annotated[str, StringConstraints(pattern=TEMPLATE_KEY_PATTERN, max_length=64)]
_TEMPLATE_FIELDS = ("template", "data", "locale")
# The either/or of texts and template, for the OpenAPI document (so a schema-driven client, or
# fuzzer, knows it as the validator below does).
_TEXTS_OR_TEMPLATE: dict[str, Any] = {
    "oneOf": [
        {
            "required": ["title", "message"],
            "not": {"anyOf": [{"required": [name]} for name in _TEMPLATE_FIELDS]},
        },
        {
            "required": ["template"],
            "not": {"anyOf": [{"required": ["title"]}, {"required": ["message"]}]},
        },
    ]
}


class NotificationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_TEXTS_OR_TEMPLATE)

    user_id: Identifier
    # Either title and message, or template and data (docs/architecture.md, "Templates"). Left
    # out, not null: the document says so (SkipJsonSchema), and _no_nulls refuses a null.
    title: Title | SkipJsonSchema[None] = None
    message: MessageText | SkipJsonSchema[None] = None
    template: TemplateKey | SkipJsonSchema[None] = Field(
        default=None, description="a template key, rendered at enqueue, in place of title/message"
    )
    data: JsonObject | SkipJsonSchema[None] = Field(
        default=None, description="the template's ``data``: at most 64 KiB of JSON"
    )
    locale: OptionalLocale = Field(
        default=None, description="render in this locale (else the recipient's), with fallbacks"
    )
    notification_type: NotificationType = NotificationType.INFO
    priority: Priority = Priority.NORMAL
    channels: Annotated[
        list[ChannelName], Field(min_length=1, json_schema_extra=channel_list_schema)
    ] = Field(default_factory=lambda: [Channel.WEBSOCKET.value])
    related_task_id: Identifier | None = None
    action_url: HttpUrlStr | None = None
    metadata: Metadata = Field(default_factory=dict)
    recipient: RecipientOverride | None = None
    send_at: IsoDatetime | None = None
    expires_at: IsoDatetime | None = Field(
        default=None, description="when undelivered channels give up; later than send_at"
    )
    # docs/architecture.md, "Digest, throttle and escalation".
    digest: DigestSpec | None = None
    throttle: ThrottleSpec | None = None
    escalation: Escalation | None = None
    cancellation_key: PlanKey | None = Field(
        default=None, description="POST /v1/notifications/cancel stops what is unsent by it"
    )

    # Field validators (not a model validator) so that the error's ``loc`` names the field.
    @field_validator("channels")
    @classmethod
    def _channels_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("channels must not repeat")
        return value

    @field_validator("expires_at")
    @classmethod
    def _expires_after_send(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        send_at = info.data.get("send_at")
        if value is not None and send_at is not None and value <= send_at:
            raise ValueError("expires_at must be later than send_at")
        return value

    @field_validator("escalation")
    @classmethod
    def _steps_apart(
        cls, value: list[EscalationStep] | None, info: ValidationInfo
    ) -> list[EscalationStep] | None:
        check_escalation(value, list(info.data.get("channels") or ()))
        return value

    @property
    def delivery_plan(self) -> dict[str, Any] | None:
        """Digest, throttle and escalation as stored with the row (None: none asked)."""
        return plan_of(self.digest, self.throttle, self.escalation)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in ("title", "message", *_TEMPLATE_FIELDS):
                if name in value and value[name] is None:
                    raise ValueError(f"{name} must not be null: leave it out")
        return value

    @model_validator(mode="after")
    def _texts_or_template(self) -> NotificationCreate:
        texts = self.title is not None or self.message is not None
        if self.template is not None:
            if texts:
                raise ValueError("send either title and message, or template and data, not both")
            return self
        if self.data is not None or self.locale is not None:
            raise ValueError("data and locale go with a template")
        if self.title is None or self.message is None:
            raise ValueError("title and message are required (or template and data)")
        return self


class NotificationBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notifications: Annotated[list[NotificationCreate], Field(min_length=1, max_length=MAX_BATCH)]


class ChannelDeliveryPublic(BaseModel):
    status: ChannelStatus
    attempts: int
    last_error: str | None
    provider_id: str | None
    next_attempt_at: AwareDatetime | None
    updated_at: AwareDatetime


class NotificationPublic(BaseModel):
    id: uuid.UUID
    user_id: str
    title: str
    message: str
    notification_type: NotificationType
    priority: Priority
    channels: list[StoredChannelName]
    is_read: bool
    read_at: AwareDatetime | None
    related_task_id: str | None
    action_url: str | None
    metadata: dict[str, Any]
    status: NotificationStatus
    delivery_status: dict[str, ChannelDeliveryPublic]
    retry_count: int
    send_at: AwareDatetime | None
    expires_at: AwareDatetime | None
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @classmethod
    def from_row(cls, row: Notification) -> NotificationPublic:
        return cls.model_validate(row.to_dict())


class NotificationBatchPublic(BaseModel):
    notifications: list[NotificationPublic]


class InboxPage(BaseModel):
    items: list[NotificationPublic]
    unread_count: int
    next_cursor: str | None


class ReadAllResult(BaseModel):
    updated: int
    unread_count: int
