"""The built-in templates, shipped as JSON files in ``notifier/templates/builtin/`` (one per
key, ``en`` and ``zh-CN``). The triggers render them; a stored template of the same key
overrides one, and deleting it brings the built-in back. Built-ins have version 0.

What each one has in scope is in its ``description``: ``task`` (the task as
``GET /v1/tasks/{id}`` shows it) for the task templates, plus ``data.log`` for the log ones;
``data.count`` and ``data.events`` for ``digest``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType

from notifier.templates.definition import TemplateDefinition

BUILTIN_KEYS = ("digest", "task.completed", "task.failed", "task.log.critical", "task.log.error")


@cache
def builtin_templates() -> Mapping[str, TemplateDefinition]:
    folder = resources.files("notifier.templates") / "builtin"
    found: dict[str, TemplateDefinition] = {}
    for key in BUILTIN_KEYS:
        body = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        found[key] = TemplateDefinition(
            key=key,
            version=0,
            default_locale=body["default_locale"],
            locales=MappingProxyType(
                {tag: MappingProxyType(parts) for tag, parts in body["locales"].items()}
            ),
            description=body["description"],
            builtin=True,
        )
    return MappingProxyType(found)


def builtin_template(key: str) -> TemplateDefinition | None:
    return builtin_templates().get(key)
