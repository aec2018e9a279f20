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
    ValidationInfo,
    field_validator,
)

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
    MessageText,
    Metadata,
    PhoneE164,
    Title,
)

MAX_BATCH = 1000


class RecipientOverride(BaseModel):
    """Addresses for this notification only, instead of the stored recipient's."""

    model_config = ConfigDict(extra="forbid")
    email: EmailStr | None = Field(default=None, description=EMAIL_DESCRIPTION)
    phone: PhoneE164 | None = None


class NotificationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    title: Title
    message: MessageText
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
