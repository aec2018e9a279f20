"""Digest, throttle, escalation and cancellation key of an enqueue (docs/architecture.md,
"Digest, throttle and escalation").

Each is refused whole with a 422 that names the field when it cannot be honoured, so nothing
is written for a request the worker could not carry out as asked.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from notifier.schemas.channels import ChannelName, channel_list_schema
from notifier.schemas.common import Identifier, WholeNumber
from notifier.schemas.template import TEMPLATE_KEY_PATTERN

# Digest, throttle and cancellation keys: the template key pattern, at most 57 characters, so
# that ``digest.<key>`` is itself a template key (64 at most).
MAX_PLAN_KEY_CHARS = 57
MAX_WINDOW_SECONDS = 86_400
MAX_STEP_SECONDS = 604_800
MAX_ESCALATION_STEPS = 5  # bounded: each step is a delivery row per channel
MAX_SEEN_IDS = 100  # one seen request's ids (notifier/storage/escalation.py says the same)

PlanKey = Annotated[
    str, StringConstraints(pattern=TEMPLATE_KEY_PATTERN, max_length=MAX_PLAN_KEY_CHARS)
]
# Whole numbers as JSON Schema means them (60.0 is one; true is not).
WindowSeconds = Annotated[int, Field(ge=1, le=MAX_WINDOW_SECONDS), WholeNumber]


class DigestSpec(BaseModel):
    """Later notifications for (user, key) within the window go out as one digest."""

    model_config = ConfigDict(extra="forbid")
    key: PlanKey
    window_seconds: WindowSeconds
    leading: bool = Field(default=False, strict=True, description="the first goes out at once")


class ThrottleSpec(BaseModel):
    """At most ``limit`` sends per (user, key) in any sliding ``window_seconds``."""

    model_config = ConfigDict(extra="forbid")
    key: PlanKey
    limit: Annotated[int, Field(ge=1, le=1_000_000), WholeNumber]
    window_seconds: WindowSeconds


class EscalationStep(BaseModel):
    """Channels sent ``after_seconds`` after enqueue unless the user has seen (or read) it."""

    model_config = ConfigDict(extra="forbid")
    after_seconds: Annotated[int, Field(ge=1, le=MAX_STEP_SECONDS), WholeNumber]
    channels: Annotated[
        list[ChannelName], Field(min_length=1, json_schema_extra=channel_list_schema)
    ]
    unless: Literal["seen", "read"] = "seen"

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("channels must not repeat")
        return value


Escalation = Annotated[list[EscalationStep], Field(min_length=1, max_length=MAX_ESCALATION_STEPS)]


def check_escalation(steps: list[EscalationStep] | None, channels: list[str]) -> None:
    """Steps in strictly increasing time, each channel once, none among the notification's own
    (a channel is one delivery row: it cannot be sent now and escalated to later)."""
    if not steps:
        return
    seen: set[str] = set(channels)
    previous = 0
    for step in steps:
        if step.after_seconds <= previous:
            raise ValueError("escalation steps must be in increasing after_seconds")
        previous = step.after_seconds
        for name in step.channels:
            if name in seen:
                raise ValueError(
                    f"escalation channel {name!r} is already among the notification's channels"
                    " or an earlier step's"
                )
            seen.add(name)


def plan_of(
    digest: DigestSpec | None,
    throttle: ThrottleSpec | None,
    escalation: list[EscalationStep] | None,
) -> dict[str, Any] | None:
    """The stored form (``notifications.delivery_plan``), plain JSON; None when none is set."""
    plan: dict[str, Any] = {}
    if digest is not None:
        plan["digest"] = digest.model_dump()
    if throttle is not None:
        plan["throttle"] = throttle.model_dump()
    if escalation:
        plan["escalation"] = [step.model_dump() for step in escalation]
    return plan or None


class CancelByKey(BaseModel):
    """``POST /v1/notifications/cancel``: stop what is unsent of a user's notifications."""

    model_config = ConfigDict(extra="forbid")
    user_id: Identifier
    cancellation_key: PlanKey


class CancelByKeyResult(BaseModel):
    notifications: int = Field(description="notifications with a channel cancelled")
    channels: int = Field(description="channels cancelled")


class SeenMarks(BaseModel):
    """``POST /v1/users/{u}/notifications/seen``: what a client without a socket showed."""

    model_config = ConfigDict(extra="forbid")
    ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_SEEN_IDS)]


class SeenResult(BaseModel):
    skipped: int = Field(description="escalation step channels skipped as seen")


class TaskNotifyPlan(BaseModel):
    """``task_metadata["notify"]``'s delivery plan for one task's triggered notifications (its
    ``on_*`` channel overrides pass through as they are)."""

    model_config = ConfigDict(extra="allow")
    digest: DigestSpec | None = None
    throttle: ThrottleSpec | None = None
    escalation: Escalation | None = None

    @field_validator("escalation")
    @classmethod
    def _steps_apart(cls, value: list[EscalationStep] | None) -> list[EscalationStep] | None:
        # The event's own channels are known only when it fires (triggers/rules.py drops a
        # step channel the event already sends on).
        check_escalation(value, [])
        return value


PLAN_FIELDS = frozenset({"digest", "throttle", "escalation"})


def task_notify(notify: dict[str, Any]) -> dict[str, Any]:
    """A task's ``notify`` object with its plan validated and normalized (defaults filled);
    ValueError naming the field when it cannot be honoured."""
    try:
        plan = TaskNotifyPlan.model_validate(notify)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"notify.{where}: {first['msg']}") from None
    return {**notify, **plan.model_dump(include=set(PLAN_FIELDS & notify.keys()))}
