"""Stored templates, and the per-key version counter that outlives them.

``templates`` holds the current version of each stored template (a built-in is not stored
until a PUT overrides it). ``template_version_counters`` holds the last version a key was
given: a PUT bumps it in the same transaction as its write, and a DELETE leaves it, so a key's
versions never repeat — a renderer's cache anywhere may key compiled templates by version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from notifier.models.base import Base, utcnow

MAX_KEY_CHARS = 64


class Template(Base):
    __tablename__ = "templates"

    key: Mapped[str] = mapped_column(String(MAX_KEY_CHARS), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    default_locale: Mapped[str] = mapped_column(String(35))
    # {"en": {"title": "...", "message": "...", ...}, "zh-CN": {...}}: canonical tags.
    locales: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TemplateVersionCounter(Base):
    __tablename__ = "template_version_counters"

    key: Mapped[str] = mapped_column(String(MAX_KEY_CHARS), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)
