"""What rendering templates at enqueue reads: the templates of some keys and the locale and time
zone of some users, on one connection without a transaction around it.

On PostgreSQL the connection is autocommit (as the enqueue's write is): two statements, two
round trips, where an ORM session also paid a BEGIN and a ROLLBACK, and built an ORM object per
recipient. Under load each round trip waits for a turn of the busy event loop, so they are
what a group of renders costs (notifier/api/template_enqueue.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy import select
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


_TEMPLATES = select(
    Template.key, Template.version, Template.default_locale, Template.locales, Template.description
)
_RECIPIENTS = select(Recipient.user_id, Recipient.locale, Recipient.timezone)


async def read_render_inputs(
    engine: AsyncEngine, keys: Collection[str], users: Collection[str]
) -> RenderInputs:
    wanted_keys, wanted_users = sorted(set(keys)), sorted(set(users))
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        templates: dict[str, TemplateDefinition] = {}
        if wanted_keys:
            rows = await connection.execute(_TEMPLATES.where(Template.key.in_(wanted_keys)))
            for key, version, default_locale, locales, description in rows:
                templates[key] = TemplateDefinition(
                    key=key,
                    version=version,
                    default_locale=default_locale,
                    locales=MappingProxyType(
                        {tag: MappingProxyType(dict(parts)) for tag, parts in locales.items()}
                    ),
                    description=description,
                )
        recipients: dict[str, RecipientLocale] = {}
        if wanted_users:
            rows = await connection.execute(_RECIPIENTS.where(Recipient.user_id.in_(wanted_users)))
            recipients = {user: RecipientLocale(locale, zone) for user, locale, zone in rows}
    for key in wanted_keys:
        builtin = builtin_template(key)
        if key not in templates and builtin is not None:
            templates[key] = builtin
    return RenderInputs(templates, recipients)
