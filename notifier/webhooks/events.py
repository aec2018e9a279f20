"""The webhook event types, the ``data`` each carries, and the envelope a receiver gets:
``{"id", "type", "timestamp", "data"}`` (docs/architecture.md, "Outbound webhooks").

One event per transition, named after the status entered; its id is the ``webhook-id`` of every
delivery of it, to every endpoint, on every retry. Whoever makes the change builds the event
with one of the constructors below and hands it to ``notifier.storage.webhooks.emit_events``
in the transaction of the change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from notifier.models.base import utcnow


class WebhookEventType(StrEnum):
    # One per channel (``data``: id, user_id, channel, status, attempts, last_error,
    # provider_id), named after the channel status entered.
    NOTIFICATION_SENT = "notification.sent"
    NOTIFICATION_DELIVERED = "notification.delivered"
    NOTIFICATION_FAILED = "notification.failed"
    NOTIFICATION_SKIPPED = "notification.skipped"
    # The user read it (id, user_id, read_at).
    NOTIFICATION_READ = "notification.read"
    # The whole notification reached delivered, partially_failed, failed, skipped, cancelled
    # or expired (id, user_id, status, delivery_status).
    NOTIFICATION_SETTLED = "notification.settled"
    # The task as GET /v1/tasks/{id} shows it.
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    # POST /v1/webhook-endpoints/{id}/test: goes to that endpoint only, whatever its filter.
    WEBHOOK_TEST = "webhook.test"


EVENT_TYPES = frozenset(t.value for t in WebhookEventType)
ALL_EVENTS = "*"  # in an endpoint's ``events``: every type

# The channel statuses that are events of their own, and their event.
CHANNEL_EVENTS = {
    "sent": WebhookEventType.NOTIFICATION_SENT,
    "delivered": WebhookEventType.NOTIFICATION_DELIVERED,
    "failed": WebhookEventType.NOTIFICATION_FAILED,
    "skipped": WebhookEventType.NOTIFICATION_SKIPPED,
}


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One change to report. ``id`` is fixed here, before the event is stored, so that the
    caller knows it (``POST …/test`` answers with it)."""

    type: WebhookEventType
    data: dict[str, Any]
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=utcnow)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def envelope_body(
    event_id: uuid.UUID, event_type: str, created_at: datetime, data_json: str
) -> bytes:
    """The request body of every delivery of an event: the same bytes on every retry (a
    function of the stored event only). ``data_json`` is the event's ``data`` as the database
    holds it, put in as it is: decoding and encoding it again for every request was a tenth
    of the sender's time. The other members are ours (a UUID, a type name, a timestamp), with
    nothing to escape."""
    head = f'{{"id":"{event_id}","type":"{event_type}","timestamp":"{_iso(created_at)}","data":'
    return f"{head}{data_json}}}".encode()


def data_json(data: dict[str, Any]) -> str:
    """``data`` as JSON text, the way ``envelope_body`` takes it (for callers that have the
    dict, not the stored text)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def matches(filter_: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint subscribed with ``filter_`` receives ``event_type``."""
    types = set(filter_)
    return ALL_EVENTS in types or event_type in types


# --- constructors, one per kind of change -----------------------------------------------------


def channel_event(
    *,
    notification_id: uuid.UUID,
    user_id: str,
    channel: str,
    status: str,
    attempts: int,
    last_error: str | None,
    provider_id: str | None,
    at: datetime | None = None,
) -> WebhookEvent | None:
    """The event of a channel entering ``status``; None for a status that is no event of its
    own (pending, retrying, digested, expired, cancelled: the settled event covers those)."""
    event_type = CHANNEL_EVENTS.get(status)
    if event_type is None:
        return None
    data = {
        "id": str(notification_id),
        "user_id": user_id,
        "channel": channel,
        "status": status,
        "attempts": attempts,
        "last_error": last_error,
        "provider_id": provider_id,
    }
    return WebhookEvent(event_type, data, created_at=at or utcnow())


def notification_settled(
    *,
    notification_id: uuid.UUID,
    user_id: str,
    status: str,
    delivery_status: dict[str, Any],
    at: datetime | None = None,
) -> WebhookEvent:
    data = {
        "id": str(notification_id),
        "user_id": user_id,
        "status": status,
        "delivery_status": delivery_status,
    }
    return WebhookEvent(WebhookEventType.NOTIFICATION_SETTLED, data, created_at=at or utcnow())


def notification_read(
    *, notification_id: uuid.UUID, user_id: str, read_at: datetime
) -> WebhookEvent:
    data = {"id": str(notification_id), "user_id": user_id, "read_at": _iso(read_at)}
    return WebhookEvent(WebhookEventType.NOTIFICATION_READ, data, created_at=read_at)


def task_ended(status: str, task: dict[str, Any], *, at: datetime | None = None) -> WebhookEvent:
    """``task.completed`` / ``task.failed``; ``task`` is the body of GET /v1/tasks/{id}."""
    kinds = {"completed": WebhookEventType.TASK_COMPLETED, "failed": WebhookEventType.TASK_FAILED}
    return WebhookEvent(kinds[status], task, created_at=at or utcnow())


def endpoint_test_event(*, endpoint_id: uuid.UUID, url: str) -> WebhookEvent:
    data = {
        "test": True,
        "endpoint_id": str(endpoint_id),
        "url": url,
        "message": "a test event sent by POST /v1/webhook-endpoints/{id}/test",
    }
    return WebhookEvent(WebhookEventType.WEBHOOK_TEST, data)
