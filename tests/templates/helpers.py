"""Helpers for the template tests: unique keys, template bodies, and what the database holds."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from notifier.models.template import Template, TemplateVersionCounter
from tests.support.service import RunningService


def new_key(prefix: str = "t") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def template_body(
    title: str = "Hello {{ data.name }}",
    message: str = "Your order {{ data.order }} shipped.",
    *,
    default_locale: str = "en",
    **locales: dict[str, str],
) -> dict[str, Any]:
    """``{"default_locale", "locales"}`` with an ``en`` locale, plus any given (``zh_CN=...``
    for ``zh-CN``)."""
    body: dict[str, Any] = {
        "description": "test template",
        "default_locale": default_locale,
        "locales": {"en": {"title": title, "message": message}},
    }
    for name, parts in locales.items():
        body["locales"][name.replace("_", "-")] = parts
    return body


async def stored_templates(service: RunningService, key: str) -> int:
    async with service.context.sessions() as session:
        query = select(func.count()).select_from(Template).where(Template.key == key)
        return int((await session.execute(query)).scalar_one())


async def last_version(service: RunningService, key: str) -> int | None:
    async with service.context.sessions() as session:
        query = select(TemplateVersionCounter.last_version).where(TemplateVersionCounter.key == key)
        return (await session.execute(query)).scalar_one_or_none()
