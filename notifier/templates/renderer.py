"""Rendering a template for one recipient: locale resolution, the sandbox, the limits, and a
cache of compiled templates.

The renderer takes everything as input — the template definition, the data, the recipient's
locale and time zone, the notification's fields — and touches no database, so a batch renders
for many users after one lookup of the templates (storage/templates.py) and one of the
recipients. ``render`` is synchronous and time-boxed in the thread that runs it (budget.py);
``render_async`` and ``render_many`` run it on the renderer's own small thread pool, so the
event loop never waits on a template. What a render takes and gives: render_types.py.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from types import TracebackType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Template, UndefinedError
from jinja2.exceptions import SecurityError

from notifier.templates.budget import TEMPLATE_FILENAME, OutOfBudget, StepBudget
from notifier.templates.definition import (
    HTML_PARTS,
    OUTPUT_LIMITS,
    PARTS,
    REQUIRED_PARTS,
    SINGLE_LINE_PARTS,
    TemplateDefinition,
)
from notifier.templates.errors import (
    InvalidLocale,
    MissingVariable,
    OutputTooLarge,
    RenderFailed,
    RenderLimitExceeded,
    TemplateError,
    UnsafeTemplate,
)
from notifier.templates.filters import FilterInputError
from notifier.templates.guards import Limits
from notifier.templates.locales import (
    UnusableLocale,
    babel_locale,
    canonical_tag,
    resolve_locale,
    usable_tag,
)
from notifier.templates.render_types import (
    RecipientInfo,
    RenderedParts,
    RenderedTemplate,
    RenderRequest,
)
from notifier.templates.sandbox import MissingName, NotifierSandbox
from notifier.templates.scope import RenderScope, rendering_in
from notifier.templates.validation import check_part

T = TypeVar("T")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f]")
_UTC = ZoneInfo("UTC")


class TemplateRenderer:
    """Renders and validates templates; one per process (it owns a thread pool and a cache)."""

    def __init__(
        self, *, limits: Limits | None = None, cache_size: int = 1024, threads: int = 2
    ) -> None:
        self.limits = limits or Limits()
        self._environments = {
            False: NotifierSandbox(autoescape=False, limits=self.limits),
            True: NotifierSandbox(autoescape=True, limits=self.limits),
        }
        self._cache: OrderedDict[tuple[str, int, str, str], Template] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="template")

    # --- on the event loop ---------------------------------------------------------------
    async def render_async(self, request: RenderRequest) -> RenderedTemplate:
        return await self._in_pool(self.render, request)

    async def render_many(
        self, requests: Sequence[RenderRequest]
    ) -> list[RenderedTemplate | TemplateError]:
        """Render each request (one hop to the pool for all); a failed one is its error.

        Each render has its own budget, and the batch one of ``Limits.batch_seconds``: the
        requests still waiting when it runs out fail with RenderLimitExceeded, so that a
        batch of a thousand runaway renders holds a pool thread for seconds, not minutes."""
        if not requests:
            return []
        return await self._in_pool(self._render_each, list(requests))

    async def render_groups(
        self, groups: Sequence[Sequence[RenderRequest]]
    ) -> list[list[RenderedTemplate | TemplateError]]:
        """``render_many`` for several callers at once, in one hop to the pool: each group has
        its own batch budget, so one caller's runaway templates cannot fail another's (they
        can delay them, by at most ``Limits.batch_seconds``)."""
        if not groups:
            return []
        return await self._in_pool(lambda: [self._render_each(list(group)) for group in groups])

    async def validate_async(self, locales: Mapping[str, Mapping[str, str]]) -> None:
        await self._in_pool(self.validate, locales)

    async def _in_pool(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- in any thread ---------------------------------------------------------------------
    def validate(self, locales: Mapping[str, Mapping[str, str]]) -> None:
        """Refuse, before storing, what can be seen in the sources (validation.py)."""
        for locale, parts in locales.items():
            for part, source in parts.items():
                try:
                    check_part(self._environments[part in HTML_PARTS], source, part=part)
                except TemplateError as exc:
                    raise exc.located(locale=locale) from None

    def render(self, request: RenderRequest) -> RenderedTemplate:
        template = request.template
        locale = self._resolve_locale(request)
        recipient = request.recipient or RecipientInfo(id=None)
        variables: dict[str, Any] = {
            "data": request.data,
            "user": {
                "id": recipient.id,
                "locale": recipient.locale,
                "timezone": recipient.timezone,
            },
            "notification": {
                "notification_type": request.notification.notification_type,
                "priority": request.notification.priority,
                "action_url": request.notification.action_url,
            },
        }
        if request.task is not None:
            variables["task"] = request.task
        scope = RenderScope(
            locale=babel_locale(locale), timezone=_zone(recipient.timezone), roots=variables
        )
        budget = StepBudget(max_steps=self.limits.max_steps, seconds=self.limits.seconds)
        rendered: dict[str, str] = {}
        for part in PARTS:
            source = template.sources(locale).get(part)
            if source is None:
                continue
            compiled = None
            try:
                compiled = self._compiled(template, locale, part, source)
                with rendering_in(scope), budget.running():
                    text = self._render_part(compiled, variables, part)
                rendered[part] = _normalise(text, part)
            except TemplateError as exc:
                raise exc.located(key=template.key, locale=locale, part=part) from None
            except OutOfBudget as exc:
                raise RenderLimitExceeded(
                    exc.why, key=template.key, locale=locale, part=part
                ) from None
            except Exception as exc:  # every other failure is a 422 for the caller
                raise _render_error(exc, compiled).located(
                    key=template.key, locale=locale, part=part
                ) from None
        for part in REQUIRED_PARTS:
            if not rendered.get(part):
                raise RenderFailed(
                    f"{part} rendered empty", key=template.key, locale=locale, part=part
                )
        optional = {part: rendered.get(part) or None for part in PARTS}  # empty: absent
        return RenderedTemplate(
            key=template.key,
            version=template.version,
            locale=locale,
            parts=RenderedParts(
                title=rendered["title"],
                message=rendered["message"],
                email_subject=optional["email_subject"],
                email_html=optional["email_html"],
                sms=optional["sms"],
                push_title=optional["push_title"],
                push_body=optional["push_body"],
            ),
        )

    def _render_each(self, requests: list[RenderRequest]) -> list[RenderedTemplate | TemplateError]:
        deadline = time.monotonic() + self.limits.batch_seconds
        results: list[RenderedTemplate | TemplateError] = []
        for request in requests:
            if time.monotonic() > deadline:
                results.append(
                    RenderLimitExceeded(
                        f"the batch ran out of rendering time ({self.limits.batch_seconds:g} s)",
                        key=request.template.key,
                    )
                )
                continue
            try:
                results.append(self.render(request))
            except TemplateError as exc:
                results.append(exc)
        return results

    def _resolve_locale(self, request: RenderRequest) -> str:
        template = request.template
        if request.locale is not None:
            try:
                wanted: str | None = canonical_tag(request.locale)
            except UnusableLocale as exc:
                raise InvalidLocale(str(exc), key=template.key) from None
        else:
            wanted = usable_tag(request.recipient.locale if request.recipient else None)
        return resolve_locale(wanted, template.locales, template.default_locale)

    def _compiled(
        self, template: TemplateDefinition, locale: str, part: str, source: str
    ) -> Template:
        # (key, version) names one source for good: versions never repeat for a key.
        cache_key = (template.key, template.version, locale, part)
        with self._cache_lock:
            compiled = self._cache.get(cache_key)
            if compiled is not None:
                self._cache.move_to_end(cache_key)
                return compiled
        compiled = self._environments[part in HTML_PARTS].from_string(source)
        with self._cache_lock:
            self._cache[cache_key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def _render_part(self, compiled: Template, variables: dict[str, Any], part: str) -> str:
        # Streamed, so that output over the limit stops the render instead of being built.
        cap = max(self.limits.max_value_chars, OUTPUT_LIMITS[part])
        pieces: list[str] = []
        size = 0
        # The root render function itself, not Template.generate(): that wrapper costs a
        # traced call per output piece, only to rewrite tracebacks (_template_line does).
        stream = compiled.root_render_func(compiled.new_context(variables))
        try:
            for piece in stream:
                size += len(piece)
                if size > cap:
                    raise _too_large(part)
                pieces.append(piece)
        finally:
            # Stopped early (output over the limit): finish the generator now, in the budget.
            getattr(stream, "close", lambda: None)()
        return "".join(pieces)

    @property
    def cached_templates(self) -> int:
        with self._cache_lock:
            return len(self._cache)


def _normalise(text: str, part: str) -> str:
    """Trimmed; the one-line parts on one line; no control characters but tab and newlines.
    Then the part's limit (UTF-8 bytes for HTML, characters otherwise)."""
    if part in SINGLE_LINE_PARTS:
        text = " ".join(_LINE_BREAKING.sub(" ", text).split())
    else:
        text = _CONTROL.sub("", text).strip()
    size = len(text.encode()) if part in HTML_PARTS else len(text)
    if size > OUTPUT_LIMITS[part]:
        raise _too_large(part)
    return text


def _too_large(part: str) -> OutputTooLarge:
    unit = "bytes" if part in HTML_PARTS else "characters"
    limit = OUTPUT_LIMITS[part]
    return OutputTooLarge(
        f"{part} rendered over its limit of {limit} {unit}", part=part, limit=limit
    )


def _render_error(exc: Exception, compiled: Template | None) -> TemplateError:
    line = _template_line(exc.__traceback__, compiled)
    where: dict[str, Any] = {"line": line} if line is not None else {}
    if isinstance(exc, MissingName):
        return MissingVariable(exc.message or "a variable", **where)
    if isinstance(exc, SecurityError):
        return UnsafeTemplate(str(exc), **where)
    if isinstance(exc, RecursionError):
        return RenderLimitExceeded("macros recurse too deeply", **where)
    if isinstance(exc, MemoryError):
        return RenderLimitExceeded("the template ran out of memory", **where)
    if isinstance(exc, UndefinedError | FilterInputError):
        return RenderFailed(str(exc), **where)
    return RenderFailed(f"{type(exc).__name__}: {exc}", **where)


def _template_line(traceback: TracebackType | None, compiled: Template | None) -> int | None:
    """The template line an error was raised at: the innermost frame of compiled template
    code, its Python line mapped back through the template's debug information."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == TEMPLATE_FILENAME:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    if line is None or compiled is None:
        return None
    return compiled.get_corresponding_lineno(line)


@lru_cache(maxsize=256)
def _zone(name: str | None) -> ZoneInfo:
    if not name:
        return _UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return _UTC
