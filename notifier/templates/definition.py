"""A template as the renderer sees it, and the parts each locale holds.

Every locale has ``title`` and ``message``; the other parts are optional, and a channel whose
part is absent uses title and message (an email without ``email_html`` gets the email channel's
default layout). Limits are per part: ``SOURCE_LIMITS`` on what a PUT may store (a template
may be longer than what it renders, with its conditions), ``OUTPUT_LIMITS`` on what one render
may produce, in characters (UTF-8 bytes for ``email_html``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

PartName = Literal[
    "title", "message", "email_subject", "email_html", "sms", "push_title", "push_body"
]
PARTS: tuple[PartName, ...] = (
    "title",
    "message",
    "email_subject",
    "email_html",
    "sms",
    "push_title",
    "push_body",
)
REQUIRED_PARTS: tuple[PartName, ...] = ("title", "message")
HTML_PARTS: frozenset[str] = frozenset({"email_html"})
# Rendered on one line: whitespace runs (newlines included) become one space.
SINGLE_LINE_PARTS: frozenset[str] = frozenset({"title", "email_subject", "push_title"})

OUTPUT_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "title": 200,  # the notifications column
        "message": 10_000,
        "email_subject": 255,
        "email_html": 262_144,  # 256 KiB of UTF-8
        "sms": 1_600,  # Twilio's limit for one message body
        "push_title": 200,
        "push_body": 1_000,  # a Web Push payload is at most ~4 KB, with the rest of the frame
    }
)
SOURCE_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "title": 2_000,
        "message": 20_000,
        "email_subject": 2_000,
        "email_html": 262_144,
        "sms": 5_000,
        "push_title": 2_000,
        "push_body": 5_000,
    }
)
MAX_LOCALES = 100
MAX_DESCRIPTION_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class TemplateDefinition:
    """One version of a template: ``locales`` maps a canonical tag to its parts' sources.

    Built-in templates have version 0; a stored one has the version its PUT got, which is never
    reused for the key, so (key, version, locale, part) names one source for good."""

    key: str
    version: int
    default_locale: str
    locales: Mapping[str, Mapping[str, str]]
    description: str | None = None
    builtin: bool = False

    def sources(self, locale: str) -> Mapping[str, str]:
        return self.locales[locale]
