"""Task and task-log schemas."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from notifier.models.log import LogLevel
from notifier.models.task import TaskStatus
from notifier.schemas.common import (
    Identifier,
    JsonObject,
    MessageText,
    ShortName,
    StorableText,
    WholeNumber,
)
from notifier.schemas.delivery_plan import PLAN_FIELDS, task_notify

Tag = Annotated[ShortName, StringConstraints(max_length=64)]


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: Identifier
    user_id: Identifier
    task_type: ShortName
    # Whole numbers: JSON true/false are not numbers (lax validation took false for 0).
    total_steps: Annotated[int, Field(ge=1, le=1_000_000), WholeNumber] | None = None
    estimated_duration: Annotated[int, Field(ge=0, le=30 * 24 * 3600), WholeNumber] | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] = Field(default_factory=list)
    task_metadata: JsonObject = Field(default_factory=dict)

    @field_validator("task_metadata")
    @classmethod
    def _notify_plan(cls, value: dict[str, Any]) -> dict[str, Any]:
        # notify.throttle / notify.escalation / notify.digest: refused now rather than
        # ignored when the task fails (docs/architecture.md, "Digest, throttle and escalation").
        notify = value.get("notify")
        if isinstance(notify, dict) and PLAN_FIELDS & notify.keys():
            return {**value, "notify": task_notify(notify)}
        return value


class TaskUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    progress: Annotated[float, Field(strict=True, ge=0.0, le=100.0)] | None = None
    status: TaskStatus | None = None
    current_step: Annotated[StorableText, StringConstraints(max_length=500)] | None = None
    result: JsonObject | None = None
    error_message: Annotated[StorableText, StringConstraints(max_length=10_000)] | None = None
    error_details: JsonObject | None = None


class TaskPublic(BaseModel):
    id: uuid.UUID
    task_id: str
    user_id: str
    task_type: str
    progress: float
    progress_percentage: float
    status: TaskStatus
    current_step: str | None
    total_steps: int | None
    estimated_duration: int | None
    estimated_remaining_seconds: float | None
    duration_seconds: float | None
    started_at: AwareDatetime | None
    completed_at: AwareDatetime | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    result: dict[str, Any] | None
    error_message: str | None
    error_details: dict[str, Any] | None
    task_metadata: dict[str, Any]
    tags: list[str]


class TaskLogCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: LogLevel = LogLevel.INFO
    message: MessageText
    source: Identifier | None = None
    context: JsonObject = Field(default_factory=dict)
    stack_trace: Annotated[StorableText, StringConstraints(max_length=65_536)] | None = None
    attachments: Annotated[list[JsonObject], Field(max_length=20)] = Field(default_factory=list)


class TaskLogPublic(BaseModel):
    id: uuid.UUID
    task_id: str
    level: LogLevel
    message: str
    source: str | None
    timestamp: AwareDatetime
    context: dict[str, Any]
    stack_trace: str | None
    attachments: list[dict[str, Any]]


class TaskLogPage(BaseModel):
    items: list[TaskLogPublic]
    next_cursor: str | None
