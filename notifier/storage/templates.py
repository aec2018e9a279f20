"""Queries on stored templates, with the built-ins behind them.

A key resolves to its stored template if there is one, else to the built-in of that key (a
stored template overrides a built-in; deleting it brings the built-in back). Writes bump the
key's row in ``template_version_counters`` first: on PostgreSQL its row lock orders concurrent
PUTs and DELETEs of one key, and the counter survives the DELETE, so versions never repeat.
(SQLite serialises writers at BEGIN IMMEDIATE: storage/db.py.)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import JSON, String, delete, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.template import Template, TemplateVersionCounter
from notifier.templates.builtins import builtin_template, builtin_templates
from notifier.templates.definition import TemplateDefinition
from notifier.templates.errors import UnknownTemplate


@dataclass(frozen=True, slots=True)
class TemplateEntry:
    definition: TemplateDefinition
    created_at: datetime | None = None  # None: a built-in
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TemplateSummaryRow:
    key: str
    version: int
    builtin: bool
    description: str | None
    default_locale: str
    locales: list[str]
    updated_at: datetime | None


def _definition(row: Template) -> TemplateDefinition:
    return TemplateDefinition(
        key=row.key,
        version=row.version,
        default_locale=row.default_locale,
        locales=MappingProxyType(
            {tag: MappingProxyType(dict(parts)) for tag, parts in row.locales.items()}
        ),
        description=row.description,
    )


async def _stored(session: AsyncSession, key: str) -> Template | None:
    query = select(Template).where(Template.key == key).execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def find_template(session: AsyncSession, key: str) -> TemplateEntry | None:
    """The template a key renders with now: stored, else built in, else None."""
    row = await _stored(session, key)
    if row is not None:
        return TemplateEntry(_definition(row), row.created_at, row.updated_at)
    builtin = builtin_template(key)
    return TemplateEntry(builtin) if builtin is not None else None


async def find_templates(
    session: AsyncSession, keys: Collection[str]
) -> dict[str, TemplateDefinition]:
    """The templates for ``keys`` in one query (a batch), built-ins where none is stored.
    Unknown keys are absent: ``require_template`` names them."""
    wanted = sorted(set(keys))
    found: dict[str, TemplateDefinition] = {}
    if wanted:
        rows = await session.execute(select(Template).where(Template.key.in_(wanted)))
        found = {row.key: _definition(row) for row in rows.scalars()}
    for key in wanted:
        builtin = builtin_template(key)
        if key not in found and builtin is not None:
            found[key] = builtin
    return found


def require_template(templates: Mapping[str, TemplateDefinition], key: str) -> TemplateDefinition:
    template = templates.get(key)
    if template is None:
        raise UnknownTemplate(f"no template {key!r}: PUT /v1/templates/{key} first", key=key)
    return template


def _upsert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def _bump_counter(session: AsyncSession, key: str, *, by: int) -> int:
    """Add ``by`` to the key's counter, creating it at ``by``, and return it. The upsert takes
    the counter's row lock until the transaction ends, also when another transaction is still
    creating that row (it waits for it), which a plain UPDATE would not: it would see no row
    and lock nothing."""
    insert = _upsert(session.get_bind().dialect.name)
    statement = (
        insert(TemplateVersionCounter)
        .values(key=key, last_version=by)
        .on_conflict_do_update(
            index_elements=[TemplateVersionCounter.key],
            set_={"last_version": TemplateVersionCounter.last_version + by},
        )
        .returning(TemplateVersionCounter.last_version)
    )
    return int((await session.execute(statement)).scalar_one())


async def put_template(
    session: AsyncSession,
    key: str,
    *,
    description: str | None,
    default_locale: str,
    locales: dict[str, dict[str, str]],
    now: datetime,
) -> tuple[TemplateEntry, bool]:
    """Store a new version of ``key``; True if it was not stored before (201). The caller
    commits: the version bump and the write are one transaction."""
    version = await _bump_counter(session, key, by=1)
    # Read after the bump: behind its lock, what a concurrent PUT or DELETE committed.
    row = await _stored(session, key)
    created = row is None
    if row is None:
        row = Template(key=key, created_at=now)
        session.add(row)
    row.version = version
    row.description = description
    row.default_locale = default_locale
    row.locales = locales
    row.updated_at = now
    await session.flush()
    return TemplateEntry(_definition(row), row.created_at, row.updated_at), created


async def delete_template(session: AsyncSession, key: str) -> bool:
    """Delete the stored template; False if none was stored (the caller then rolls back). The
    counter stays, so the next PUT gets a version never seen before."""
    # Take the counter's row lock first, as a PUT does, so the two are ordered.
    await _bump_counter(session, key, by=0)
    result = await session.execute(delete(Template).where(Template.key == key))
    return bool(getattr(result, "rowcount", 0))


def _locale_tags(dialect: str) -> Any:
    # The locale tags of each row without loading its parts (up to 256 KiB of HTML a locale).
    if dialect == "postgresql":
        return literal_column(
            "(SELECT coalesce(array_agg(tag ORDER BY tag), '{}') "
            "FROM jsonb_object_keys(templates.locales) AS tag)",
            type_=ARRAY(String),
        )
    return literal_column(
        "(SELECT json_group_array(key) FROM "
        "(SELECT key FROM json_each(templates.locales) ORDER BY key))",
        type_=JSON,
    )


async def list_templates(
    session: AsyncSession, *, after: str | None, limit: int
) -> tuple[list[TemplateSummaryRow], str | None]:
    """Stored templates and the built-ins they do not override, by key, ``limit`` at a time
    after the key ``after``; returns the page and the cursor of the next one."""
    query = select(
        Template.key,
        Template.version,
        Template.description,
        Template.default_locale,
        Template.updated_at,
        _locale_tags(session.get_bind().dialect.name).label("tags"),
    ).order_by(Template.key)
    if after is not None:
        query = query.where(Template.key > after)
    # limit + 1 rows cover every key up to the page's end, so a built-in on this page is
    # known to be overridden or not.
    rows = (await session.execute(query.limit(limit + 1))).all()
    entries = [
        TemplateSummaryRow(
            r.key, r.version, False, r.description, r.default_locale, list(r.tags), r.updated_at
        )
        for r in rows
    ]
    stored = {entry.key for entry in entries}
    entries += [
        TemplateSummaryRow(b.key, 0, True, b.description, b.default_locale, sorted(b.locales), None)
        for b in builtin_templates().values()
        if b.key not in stored and (after is None or b.key > after)
    ]
    entries.sort(key=lambda entry: entry.key)
    page = entries[:limit]
    return page, page[-1].key if len(entries) > limit else None
