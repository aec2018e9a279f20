"""The renderer as part two will call it, without HTTP: batches, the compiled-template cache,
locale resolution, normalisation of the parts, and filter inputs. No database is involved:
the renderer takes everything as input."""

from __future__ import annotations

import time
from typing import Any

import pytest

from notifier.templates import (
    Limits,
    MissingVariable,
    NotificationInfo,
    RecipientInfo,
    RenderedTemplate,
    RenderLimitExceeded,
    RenderRequest,
    TemplateDefinition,
    TemplateRenderer,
    builtin_template,
)
from notifier.templates.locales import canonical_tag, resolve_locale, usable_tag


@pytest.fixture
def renderer() -> Any:
    renderer = TemplateRenderer()
    yield renderer
    renderer.close()


def definition(version: int = 1, **parts: str) -> TemplateDefinition:
    sources = {"title": "Hi {{ data.name }}", "message": "m", **parts}
    return TemplateDefinition(
        key="k", version=version, default_locale="en", locales={"en": sources}
    )


async def test_render_many_renders_each_and_returns_failures_in_place(
    renderer: TemplateRenderer,
) -> None:
    template = definition()
    requests = [
        RenderRequest(template=template, data={"name": "Ann"}),
        RenderRequest(template=template, data={}),
        RenderRequest(template=template, data={"name": "Bo"}),
    ]
    first, missing, third = await renderer.render_many(requests)
    assert isinstance(first, RenderedTemplate) and first.parts.title == "Hi Ann"
    assert isinstance(missing, MissingVariable) and missing.variable == "data.name"
    assert isinstance(third, RenderedTemplate) and third.parts.title == "Hi Bo"


async def test_a_batch_stops_rendering_when_its_time_runs_out() -> None:
    renderer = TemplateRenderer(limits=Limits(seconds=0.2, max_steps=10**12, batch_seconds=0.5))
    try:
        runaway = definition(
            message="{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
        )
        requests = [RenderRequest(template=runaway, data={"name": "x"}) for _ in range(20)]
        started = time.monotonic()
        results = await renderer.render_many(requests)
        elapsed = time.monotonic() - started
    finally:
        renderer.close()
    assert all(isinstance(r, RenderLimitExceeded) for r in results)
    messages = {str(r) for r in results}
    assert any("longer than 0.2 s" in m for m in messages)
    assert any("batch ran out of rendering time" in m for m in messages)
    # 20 renders of 0.2 s would take 4 s; the batch gives up after 0.5 s (and the render
    # then running).
    assert elapsed < 1.5, elapsed


def test_compiled_templates_are_cached_by_key_version_locale_and_part() -> None:
    renderer = TemplateRenderer(cache_size=3)
    try:
        v1 = definition(version=1)
        renderer.render(RenderRequest(template=v1, data={"name": "a"}))
        assert renderer.cached_templates == 2  # title and message
        renderer.render(RenderRequest(template=v1, data={"name": "b"}))
        assert renderer.cached_templates == 2
        # A new version is a new source: compiled again, never mistaken for the old one.
        v2 = definition(version=2, title="Hello {{ data.name }}")
        rendered = renderer.render(RenderRequest(template=v2, data={"name": "c"}))
        assert rendered.parts.title == "Hello c"
        assert renderer.cached_templates == 3  # bounded: the oldest entry went
    finally:
        renderer.close()


def test_parts_are_trimmed_one_line_parts_are_one_line(renderer: TemplateRenderer) -> None:
    template = definition(
        title="  Hi\n  {{ data.name }}\r\n",
        message="\n  Line one\x07\n\tLine two\n\n",
        email_subject="{{ data.name }}\x1b[31m",
        push_body="{% if data.flag %}shown{% endif %}",
    )
    rendered = renderer.render(
        RenderRequest(template=template, data={"name": "Ann", "flag": False})
    )
    assert rendered.parts.title == "Hi Ann"
    assert rendered.parts.message == "Line one\n\tLine two"
    assert rendered.parts.email_subject == "Ann [31m"
    # An optional part that renders empty is absent: the channel falls back.
    assert rendered.parts.push_body is None
    assert rendered.parts.with_fallbacks()["push_body"] == "Line one\n\tLine two"


def test_the_scope_holds_user_and_notification(renderer: TemplateRenderer) -> None:
    template = definition(
        message="{{ user.id }} {{ user.locale }} {{ user.timezone }} "
        "{{ notification.notification_type }} {{ notification.priority }} "
        "{{ notification.action_url }}"
    )
    rendered = renderer.render(
        RenderRequest(
            template=template,
            data={"name": "x"},
            recipient=RecipientInfo(id="u-1", locale="fr-BE", timezone="Europe/Paris"),
            notification=NotificationInfo("warning", "high", "https://x.test/a"),
        )
    )
    assert rendered.parts.message == "u-1 fr-BE Europe/Paris warning high https://x.test/a"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01", "March 1, 2026"),  # a calendar date: not moved by the time zone
        ("2026-03-01T02:00:00+00:00", "February 28, 2026"),  # 02:00 UTC is the 28th in NYC
        ("2026-03-01T02:00:00", "February 28, 2026"),  # no offset: UTC
        (1772330400, "February 28, 2026"),  # Unix seconds (2026-03-01T02:00:00Z)
    ],
)
def test_date_filter_inputs(renderer: TemplateRenderer, value: object, expected: str) -> None:
    template = definition(message="{{ data.value|date('long') }}")
    rendered = renderer.render(
        RenderRequest(
            template=template,
            data={"name": "x", "value": value},
            recipient=RecipientInfo(id="u", timezone="America/New_York"),
        )
    )
    assert rendered.parts.message == expected


@pytest.mark.parametrize(
    ("wanted", "keys", "expected"),
    [
        ("fr-BE", ["en", "fr"], "fr"),
        ("fr-BE", ["en", "fr-BE", "fr"], "fr-BE"),
        ("zh-Hans-CN", ["en", "zh-CN"], "zh-CN"),  # the same locale to Babel
        ("zh-TW", ["en", "zh-CN"], "en"),  # traditional is not simplified Chinese
        ("zh", ["en", "zh-CN"], "en"),  # fr-BE → fr → default: never sideways
        ("sr-Latn-RS", ["en", "sr-Latn"], "sr-Latn"),
        (None, ["en", "fr"], "en"),
    ],
)
def test_locale_resolution(wanted: str | None, keys: list[str], expected: str) -> None:
    assert resolve_locale(wanted, keys, "en") == expected


def test_locale_tags() -> None:
    assert canonical_tag("ZH_hans_cn") == "zh-Hans-CN"
    assert canonical_tag("en-us") == "en-US"
    assert usable_tag("xx-YY") is None
    assert usable_tag("") is None
    assert usable_tag("de_AT") == "de-AT"


def test_builtin_task_failed_in_english(renderer: TemplateRenderer) -> None:
    template = builtin_template("task.failed")
    assert template is not None
    rendered = renderer.render(
        RenderRequest(
            template=template,
            data={},
            task={"task_id": "t-9", "task_type": "import", "error_message": None},
        )
    )
    assert rendered.parts.title == "import failed"
    assert rendered.parts.message == "Task t-9 failed."
    assert rendered.parts.sms == "import failed"
    assert (rendered.key, rendered.version, rendered.locale) == ("task.failed", 0, "en")
