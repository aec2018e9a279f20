"""What a render needs and what it gives: ``RenderRequest`` (with ``RecipientInfo`` and
``NotificationInfo``) in, ``RenderedTemplate`` (with its ``RenderedParts``) out. Plain values,
so that callers build and read them without the renderer's machinery (renderer.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from notifier.templates.definition import TemplateDefinition


@dataclass(frozen=True, slots=True)
class RecipientInfo:
    """Who a render is for: ``user`` in the template. A locale or time zone that is missing or
    unusable falls back (the template's default locale; UTC), it is never an error."""

    id: str | None
    locale: str | None = None
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class NotificationInfo:
    """``notification`` in the template."""

    notification_type: str = "info"
    priority: str = "normal"
    action_url: str | None = None


@dataclass(frozen=True, slots=True)
class RenderRequest:
    template: TemplateDefinition
    data: Mapping[str, Any]
    # The request's own locale: refused (InvalidLocale) if it is not a usable tag.
    locale: str | None = None
    recipient: RecipientInfo | None = None
    notification: NotificationInfo = field(default_factory=NotificationInfo)
    # The task, as GET /v1/tasks/{id} shows it, for the built-in task templates.
    task: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RenderedParts:
    """The rendered texts. An optional part is None when the template has none (or it
    rendered empty): the channel then uses title and message."""

    title: str
    message: str
    email_subject: str | None = None
    email_html: str | None = None  # None: the email channel's default layout
    sms: str | None = None
    push_title: str | None = None
    push_body: str | None = None

    def channel_parts(self) -> dict[str, str]:
        """The parts a channel reads instead of title and message, those the template has:
        what a notification stores (``rendered_parts``) for its channels to send."""
        found = {
            "email_subject": self.email_subject,
            "email_html": self.email_html,
            "sms": self.sms,
            "push_title": self.push_title,
            "push_body": self.push_body,
        }
        return {name: text for name, text in found.items() if text is not None}

    def with_fallbacks(self) -> dict[str, str | None]:
        """Each part as its channel uses it: a missing subject or push title is the title, a
        missing push body the message, a missing SMS ``title: message`` (before the SMS
        channel adds its reference). ``email_html`` stays None: the default layout."""
        return {
            "title": self.title,
            "message": self.message,
            "email_subject": self.email_subject or self.title,
            "email_html": self.email_html,
            "sms": self.sms or f"{self.title}: {' '.join(self.message.split())}",
            "push_title": self.push_title or self.title,
            "push_body": self.push_body or self.message,
        }


@dataclass(frozen=True, slots=True)
class RenderedTemplate:
    key: str
    version: int
    locale: str  # the template locale rendered, which Babel formatted in
    parts: RenderedParts
