"""What rendering templates at enqueue reads: the templates of some keys and the locale and time
zone of some users, on one connection without a transaction around it.

On PostgreSQL the connection is autocommit (as the enqueue's write is), and both reads are one
statement: one round trip, where an ORM session paid a BEGIN, a query per table and a
ROLLBACK, and built an ORM object per recipient. Under load each round trip waits for a turn
of the busy event loop, so round trips are what a group of renders costs
(notifier/api/template_enqueue.py).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import Integer, Text, cast, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.models.recipient import Recipient
from notifier.models.template import Template
from notifier.templates.builtins import builtin_template
from notifier.templates.definition import TemplateDefinition


@dataclass(frozen=True, slots=True)
class RecipientLocale:
    locale: str | None
    timezone: str | None


@dataclass(frozen=True, slots=True)
class RenderInputs:
    templates: dict[str, TemplateDefinition]  # stored, else built in; unknown keys absent
    recipients: dict[str, RecipientLocale]  # users without a profile absent


def _both(keys: list[str], users: list[str]) -> Any:
    """One statement for both reads (one round trip): templates rows ``(key, version,
    default_locale, locales as JSON text, description)``, then recipients rows ``(user_id,
    NULL, locale, timezone, NULL)``; a NULL version tells a recipient row."""
    templates = select(
        Template.key,
        Template.version,
        Template.default_locale,
        cast(Template.locales, Text).label("locales"),
        Template.description,
    ).where(Template.key.in_(keys))
    recipients = select(
        Recipient.user_id,
        null().cast(Integer),
        Recipient.locale,
        cast(Recipient.timezone, Text),
        null().cast(Text),
    ).where(Recipient.user_id.in_(users))
    return union_all(templates, recipients)


async def read_render_inputs(
    engine: AsyncEngine, keys: Collection[str], users: Collection[str]
) -> RenderInputs:
    wanted_keys, wanted_users = sorted(set(keys)), sorted(set(users))
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        rows = (await connection.execute(_both(wanted_keys, wanted_users))).all()
    templates: dict[str, TemplateDefinition] = {}
    recipients: dict[str, RecipientLocale] = {}
    for name, version, locale, text, description in rows:
        if version is None:
            recipients[name] = RecipientLocale(locale, text)
            continue
        locales = json.loads(text)
        templates[name] = TemplateDefinition(
            key=name,
            version=version,
            default_locale=locale,
            locales=MappingProxyType(
                {tag: MappingProxyType(dict(parts)) for tag, parts in locales.items()}
            ),
            description=description,
        )
    for key in wanted_keys:
        builtin = builtin_template(key)
        if key not in templates and builtin is not None:
            templates[key] = builtin
    return RenderInputs(templates, recipients)
