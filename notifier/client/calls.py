"""One API request as data (``Call``), built once and sent by either client, and the body
builders: ``notification_body`` (public: ``notify_batch`` takes a list of them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

JsonObject = dict[str, Any]


def _identity(body: Any) -> Any:
    return body


@dataclass(frozen=True)
class Call:
    """One API request, independent of how it is sent.

    ``replay_safe``: repeating it after an unknown outcome (timeout, dropped connection) cannot
    duplicate anything. When false, only failures that prove the request was not processed are
    retried. ``parse`` turns the decoded JSON into the method's return value.
    """

    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    replay_safe: bool = True
    parse: Callable[[Any], Any] = _identity


def segment(value: str) -> str:
    return quote(str(value), safe="")


def drop_none(values: Mapping[str, Any]) -> JsonObject:
    return {k: v for k, v in values.items() if v is not None}


def isoformat(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def notification_body(
    user_id: str,
    title: str,
    message: str,
    *,
    channels: Sequence[str] | None = None,
    notification_type: str = "info",
    priority: str = "normal",
    action_url: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    related_task_id: str | None = None,
    recipient: Mapping[str, Any] | None = None,
    send_at: datetime | str | None = None,
    expires_at: datetime | str | None = None,
) -> JsonObject:
    """The JSON of one notification, as ``notify`` sends it (useful for ``notify_batch``)."""
    return drop_none(
        {
            "user_id": user_id,
            "title": title,
            "message": message,
            "channels": list(channels) if channels is not None else None,
            "notification_type": notification_type,
            "priority": priority,
            "action_url": action_url,
            "metadata": dict(metadata) if metadata is not None else None,
            "related_task_id": related_task_id,
            "recipient": dict(recipient) if recipient is not None else None,
            "send_at": isoformat(send_at),
            "expires_at": isoformat(expires_at),
        }
    )
