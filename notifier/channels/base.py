"""The one interface every delivery channel implements, and the errors it may raise.

Exception tree (a channel raises these and nothing else; third-party exceptions are translated
at the channel's boundary):

    DeliveryError
    ├── TransientError        try again later (connection refused/reset, timeout, SMTP 4xx,
    │   │                     HTTP 429/5xx); ``retry_after`` when the peer said how long
    │   └── ProviderAuthError our credentials were refused (SMTP 535, push 401/403): the channel
    │                         pauses (circuit breaker); the recipient is not at fault
    ├── PermanentError        never retry (SMTP 5xx, invalid phone number, ...)
    │   ├── SubscriptionGone  push 404/410: the subscription is deleted
    │   └── RecipientOptedOut the recipient unsubscribed at the provider (Twilio 21610)
    ├── UnknownOutcomeError   the peer may have accepted the message (a 5xx or timeout after the
    │                         request was sent); resent at most once, never blindly
    └── NotDeliverable        nothing to send to (no address, no subscription): ``skipped``
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from notifier.models.notification import ChannelStatus


class DeliveryError(Exception):
    """Delivery on a channel did not succeed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class TransientError(DeliveryError):
    """The peer could not take the message now; try again later."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderAuthError(TransientError):
    """The provider refused our credentials; the channel pauses until they are fixed."""


class PermanentError(DeliveryError):
    """The peer refused the message for good; it is not retried."""


class SubscriptionGone(PermanentError):
    """The push subscription no longer exists (404/410)."""


class RecipientOptedOut(PermanentError):
    """The recipient has opted out at the provider."""


class UnknownOutcomeError(DeliveryError):
    """The peer may or may not have accepted the message."""

    def __init__(self, message: str | None = None, *, provider_id: str | None = None) -> None:
        super().__init__(message)
        self.provider_id = provider_id


class NotDeliverable(DeliveryError):
    """There is nothing to deliver to on this channel."""


@dataclass(frozen=True, slots=True)
class PushTarget:
    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one user is reached, resolved by the worker before any channel is called."""

    user_id: str
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    push_targets: tuple[PushTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """What a channel renders and sends: a notification, detached from the database."""

    notification_id: uuid.UUID
    user_id: str
    title: str
    message: str
    notification_type: str
    priority: str
    created_at: datetime
    action_url: str | None = None
    related_task_id: str | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # The rest of what a WebSocket frame shows (models/shape.py FRAME_FIELDS).
    channels: Sequence[str] = ()
    is_read: bool = False
    send_at: datetime | None = None
    # Attempts already made on this channel (0 on the first).
    previous_attempts: int = 0
    # The previous attempt ended in UnknownOutcomeError: the peer may already hold the message,
    # so the channel must check (or make the resend recognisable) rather than resend blindly.
    after_unknown_outcome: bool = False
    # A template's channel parts (email_subject, email_html, sms, push_title, push_body),
    # rendered at enqueue; a channel uses its own part when present, else title and message.
    parts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    """A send that succeeded: ``sent`` (confirmation still to come) or ``delivered``."""

    status: ChannelStatus
    provider_id: str | None = None
    detail: str | None = None
    # Work to run once the outcome is durably recorded. The WebSocket channel publishes here:
    # recording `sent` before the frame goes out means a client that connects in between finds
    # the notification in its replay instead of missing it.
    after_recorded: Callable[[], Awaitable[None]] | None = None


class DeliveryChannel(Protocol):
    """One delivery channel. ``send`` returns on success and raises a ``DeliveryError`` else.
    What the rest of the service knows of it is its ``SPEC`` (``spec.py``, ``registry.py``)."""

    @property
    def name(self) -> str:
        """The channel's name (its ``SPEC``'s); the built-in ones declare a ``Channel``."""
        ...

    @property
    def configured(self) -> bool:
        """False when the settings this channel needs are missing (its sends are skipped)."""
        ...

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult: ...

    async def aclose(self) -> None:
        """Release pooled connections; called once when the worker stops."""
        ...
