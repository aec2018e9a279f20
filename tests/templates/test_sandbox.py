"""The sandbox over HTTP on both databases: unsafe constructs refused at PUT when the source
shows them and at render (preview) when only the data does, never rendered; runaway
templates (loops, huge output, recursion) answered with 422 within a bounded time, while the
API keeps serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from notifier.templates import Limits, TemplateRenderer
from tests.api.helpers import assert_error
from tests.support.service import RunningService, make_settings, running_service
from tests.templates.helpers import last_version, new_key, stored_templates

# What a PUT refuses from the source alone: (message source, words the error says).
REFUSED_AT_PUT: dict[str, tuple[str, str]] = {
    "__class__": ("{{ data.__class__ }}", "'__class__'"),
    "__globals__ of a method": ("{{ data.get.__globals__ }}", "'__globals__'"),
    "__mro__ of a str": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed"),
    "__self__ of a method": ("{{ data.items.__self__ }}", "'__self__'"),
    "attr filter": ("{{ data|attr('__class__') }}", "'__class__'"),
    "subscript": ("{{ data['__class__'] }}", "'__class__'"),
    "cycler": ("{% set c = cycler(1, 2) %}{{ c.next() }}", "cycler"),
    "lipsum": ("{{ lipsum() }}", "lipsum"),
    "joiner": ("{% set j = joiner() %}{{ j() }}", "joiner"),
    "namespace": ("{% set ns = namespace(n=0) %}{{ ns.n }}", "namespace"),
    "range(10**9)": ("{% for i in range(10**9) %}{% endfor %}", "range()"),
    "include": ("{% include 'other' %}", "include"),
    "import": ("{% import 'macros' as m %}", "import"),
    "an unknown name": ("Hello {{ dta.name }}", "'dta'"),
    "gi_frame": ("{{ data.gen.gi_frame }}", "'gi_frame'"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_AT_PUT))
async def test_unsafe_source_is_refused_at_put(service: RunningService, case: str) -> None:
    source, words = REFUSED_AT_PUT[case]
    key = new_key()
    body = {"locales": {"en": {"title": "t", "message": f"line one\n{source}"}}}
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=body)
    error = assert_error(response, 422, "validation_error")
    assert words in error["message"], error
    assert error["details"]["reason"] == "unsafe_template"
    assert error["details"]["part"] == "message" and error["details"]["line"] == 2
    assert await stored_templates(service, key) == 0
    assert await last_version(service, key) is None


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("ok\nok\n{{ data.name ", 3, "unexpected end of template"),
        ("{% for x in data.xs %}{{ x }}", 1, "endfor"),
        ("{{ data.name|no_such_filter }}", 1, "No filter named 'no_such_filter'"),
        ("{{ data.name is no_such_test }}", 1, "No test named 'no_such_test'"),
    ],
)
async def test_a_syntax_error_is_refused_at_put_with_its_line(
    service: RunningService, source: str, line: int, words: str
) -> None:
    key = new_key()
    body = {
        "locales": {"en": {"title": "t", "message": "m"}, "fr": {"title": "t", "message": source}}
    }
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=body)
    error = assert_error(response, 422, "validation_error")
    assert error["details"] == {
        "reason": "syntax_error",
        "key": key,
        "locale": "fr",
        "part": "message",
        "line": line,
    }, error
    assert f"line {line}" in error["message"] and words in error["message"], error
    assert await stored_templates(service, key) == 0


# Sources a PUT cannot judge (the attribute name comes from the data or is computed), refused
# when a render meets them: (message source, data, reason).
REFUSED_AT_RENDER: dict[str, tuple[str, dict[str, Any], str]] = {
    "computed attribute": ("{{ data['__cla' ~ 'ss__'] }}", {}, "unsafe_template"),
    "attribute name from data": ("{{ data[data.attr] }}", {"attr": "__class__"}, "unsafe_template"),
    "attr filter from data": (
        "{{ data.name|attr(data.attr) }}",
        {"name": "x", "attr": "__class__"},
        "unsafe_template",
    ),
    "a method's __self__ from data": (
        "{{ data.get[data.attr] }}",
        {"attr": "__self__"},
        "unsafe_template",
    ),
    "a macro's __globals__ from data": (
        "{% macro m() %}{% endmacro %}{{ m[data.a][data.b] }}",
        {"a": "__init__", "b": "__globals__"},
        "unsafe_template",
    ),
    "a mutating method": ("{{ data.xs.append(1) }}", {"xs": []}, "unsafe_template"),
    "str.expandtabs": ("{{ data.s.expandtabs(99) }}", {"s": "\t"}, "unsafe_template"),
    "range from data": ("{{ range(data.n)|length }}", {"n": 10**9}, "render_limit"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_AT_RENDER))
async def test_unsafe_access_through_data_is_refused_at_render(
    service: RunningService, case: str
) -> None:
    source, data, reason = REFUSED_AT_RENDER[case]
    key = new_key()
    async with service.client() as client:
        put = await client.put(
            f"/v1/templates/{key}", json={"locales": {"en": {"title": "t", "message": source}}}
        )
        response = await client.post(f"/v1/templates/{key}/preview", json={"data": data})
    assert put.status_code == 201, put.text
    error = assert_error(response, 422, "validation_error")
    assert error["details"]["reason"] == reason, error
    assert error["details"]["part"] == "message"
    assert "dict" not in response.text or "unsafe" in response.text  # no rendered internals


# Runaway templates: (message source, data, reason). Each would run for hours or build
# gigabytes without the limits.
RUNAWAY: dict[str, tuple[str, dict[str, Any], str]] = {
    "nested loops": (
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        {},
        "render_limit",
    ),
    "loops over data": (
        "{% for a in data.xs %}{% for b in data.xs %}{% for c in data.xs %}{% endfor %}"
        "{% endfor %}{% endfor %}",
        {"xs": list(range(5000))},
        "render_limit",
    ),
    "recursion": ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", {}, "render_limit"),
    "huge output": (
        "{% for i in range(10000) %}{{ data.s }}{% endfor %}",
        {"s": "x" * 1000},
        "output_too_large",
    ),
    "repetition": ("{{ 'x' * 10**9 }}", {}, "render_limit"),
    "big number": ("{{ 9 ** (9 ** 9) }}", {}, "render_limit"),
    "format width": ("{{ '%999999999d' % 1 }}", {}, "render_limit"),
    "doubling": (
        "{% set a = data.s ~ data.s %}{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}"
        "{% set e = d ~ d %}{% set f = e ~ e %}{% set g = f ~ f %}{{ g ~ g }}",
        {"s": "x" * 10000},
        "render_limit",
    ),
    "shared references": (
        "{% set a = data.s * 100 %}{{ [a] * 1000 }}",
        {"s": "x" * 1000},
        "render_limit",
    ),
    "padding": ("{{ data.s|center(10**9) }}", {"s": "x"}, "render_limit"),
    "replace amplification": (
        "{{ (data.s * 100).replace('', data.s) }}",
        {"s": "x" * 900},
        "render_limit",
    ),
}


@pytest.mark.parametrize("case", sorted(RUNAWAY))
async def test_a_runaway_template_is_refused_within_a_bounded_time(
    service: RunningService, case: str
) -> None:
    source, data, reason = RUNAWAY[case]
    key = new_key()
    async with service.client() as client:
        put = await client.put(
            f"/v1/templates/{key}", json={"locales": {"en": {"title": "t", "message": source}}}
        )
        assert put.status_code == 201, put.text
        started = time.monotonic()
        response = await client.post(f"/v1/templates/{key}/preview", json={"data": data})
        elapsed = time.monotonic() - started
    error = assert_error(response, 422, "validation_error")
    assert error["details"]["reason"] == reason, error
    assert error["details"]["part"] == "message"
    # The budget is 1 s of rendering (or a million steps, about 0.2 s here); the rest is HTTP.
    assert elapsed < 3.0, elapsed


@pytest.fixture(scope="module")
async def long_budget_service(database_url: str) -> AsyncIterator[RunningService]:
    """A service whose renders may run 1.5 s (no step limit): long enough that a render held
    on the event loop would show in every request's latency."""
    async with running_service(make_settings(database_url)) as running:
        original = running.context.renderer
        running.context.renderer = TemplateRenderer(limits=Limits(max_steps=10**12, seconds=1.5))
        yield running
        running.context.renderer.close()
        running.context.renderer = original


async def test_the_api_keeps_answering_while_runaway_templates_render(
    long_budget_service: RunningService,
) -> None:
    service = long_budget_service
    key = new_key()
    loop = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    async with service.client() as client:
        put = await client.put(
            f"/v1/templates/{key}", json={"locales": {"en": {"title": "t", "message": loop}}}
        )
        assert put.status_code == 201, put.text
        started = time.monotonic()
        # More runaway renders than the renderer has threads, all at once.
        previews = [
            asyncio.create_task(client.post(f"/v1/templates/{key}/preview", json={}))
            for _ in range(4)
        ]
        health_latencies = []
        while not all(p.done() for p in previews):
            asked = time.monotonic()
            health = await client.get("/healthz")
            health_latencies.append(time.monotonic() - asked)
            assert health.status_code == 200
        results = [p.result() for p in previews]
        elapsed = time.monotonic() - started
        normal = await client.post(
            "/v1/templates/task.completed/preview",
            json={"task": {"task_id": "t-1", "task_type": "export", "duration_seconds": None}},
        )
    for result in results:
        error = assert_error(result, 422, "validation_error")
        assert "longer than 1.5 s" in error["message"], error
    # Rendering runs off the event loop: a render on the loop would hold /healthz for its
    # whole 1.5 s. Off the loop, the render threads still compete for the GIL (and a shared
    # two-core machine for the CPU), which has cost a request over 0.5 s: the bound sits
    # between that and the 1.5 s a blocked loop would show.
    assert max(health_latencies) < 1.0, health_latencies
    # Two threads, four renders of 1.5 s each: two rounds, each stopped by its deadline.
    assert 3.0 <= elapsed < 6.0, elapsed
    # And the render threads are free again for ordinary templates.
    assert normal.status_code == 200, normal.text
