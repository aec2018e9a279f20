"""What a render in progress knows beyond the template's own variables: the locale and time
zone the filters format in, and the values a missing variable's name is looked up in.

Set by the renderer for the length of one part's render (in the thread that renders it) and
read by the filters and the sandbox's hooks, which Jinja calls without any of this.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from babel import Locale


@dataclass(frozen=True, slots=True)
class RenderScope:
    locale: Locale
    timezone: tzinfo
    # The template's variables by name (data, user, notification, task).
    roots: Mapping[str, Any]


_current: ContextVar[RenderScope | None] = ContextVar("notifier_render_scope", default=None)


def current_scope() -> RenderScope:
    scope = _current.get()
    if scope is None:
        raise RuntimeError("not inside a template render")
    return scope


@contextmanager
def rendering_in(scope: RenderScope) -> Iterator[None]:
    token = _current.set(scope)
    try:
        yield
    finally:
        _current.reset(token)


def path_of(target: object, roots: Mapping[str, Any]) -> str | None:
    """Where ``target`` sits in the variables, by identity: ``data.order.lines[2]``; None if it
    is not one of their values (computed in the template). Only called to name a missing
    variable, over data already bounded in size."""
    pending: list[tuple[str, Any]] = list(roots.items())
    while pending:
        path, value = pending.pop()
        if value is target:
            return path
        if isinstance(value, Mapping):
            pending.extend((child_path(path, key), item) for key, item in value.items())
        elif isinstance(value, list | tuple):
            pending.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None


def child_path(path: str, key: object) -> str:
    """``data`` + ``name`` → ``data.name``; ``data`` + ``"a b"`` → ``data['a b']``."""
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def current_scope_or_none() -> RenderScope | None:
    return _current.get()
