"""Channel tests against the local peers in ``tests.peers``, through the real libraries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from notifier.channels.base import OutgoingMessage


def make_message(**overrides: Any) -> OutgoingMessage:
    """A notification as a worker would hand it to a channel."""
    values: dict[str, Any] = {
        "notification_id": uuid.uuid4(),
        "user_id": "user-1",
        "title": "Build finished",
        "message": "Your build #42 finished successfully.",
        "notification_type": "success",
        "priority": "normal",
        "created_at": datetime.now(UTC),
        "action_url": "https://app.example.com/builds/42?tab=log&x=1",
    }
    values.update(overrides)
    return OutgoingMessage(**values)
