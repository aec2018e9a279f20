"""The template store over HTTP on both databases: PUT/GET/DELETE, versions that never repeat
(across DELETE, and under concurrent PUTs: on PostgreSQL they truly run at once, ordered by the
counter row's lock), built-ins listed, overridden and restored, and the 422s that store
nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notifier.schemas.common import ecma_regex
from tests.api.helpers import assert_error, error_locations
from tests.support.service import RunningService
from tests.templates.helpers import last_version, new_key, stored_templates, template_body


async def test_put_get_replace_delete_with_versions_that_never_repeat(
    service: RunningService,
) -> None:
    key = new_key()
    async with service.client() as client:
        created = await client.put(f"/v1/templates/{key}", json=template_body())
        got = await client.get(f"/v1/templates/{key}")
        replaced = await client.put(
            f"/v1/templates/{key}", json=template_body("Hi {{ data.name }}")
        )
        deleted = await client.delete(f"/v1/templates/{key}")
        gone = await client.get(f"/v1/templates/{key}")
        deleted_again = await client.delete(f"/v1/templates/{key}")
        recreated = await client.put(f"/v1/templates/{key}", json=template_body())

    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"] == key and body["version"] == 1 and body["builtin"] is False
    assert body["locales"] == {
        "en": {"title": "Hello {{ data.name }}", "message": "Your order {{ data.order }} shipped."}
    }
    assert body["created_at"] and body["updated_at"]
    assert got.status_code == 200 and got.json() == body
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] == 2
    assert replaced.json()["locales"]["en"]["title"] == "Hi {{ data.name }}"
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(gone, 404, "not_found")
    assert_error(deleted_again, 404, "not_found")
    # Created again after a DELETE: 201, and version 3, not 1 (a cache keyed by version on
    # another instance must never mistake it for the first one).
    assert recreated.status_code == 201, recreated.text
    assert recreated.json()["version"] == 3
    assert await last_version(service, key) == 3


async def test_locale_keys_are_stored_in_canonical_case(service: RunningService) -> None:
    key = new_key()
    body = template_body(default_locale="zh-cn", zh_cn={"title": "标题", "message": "正文"})
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["default_locale"] == "zh-CN"
    assert set(response.json()["locales"]) == {"en", "zh-CN"}


async def test_concurrent_puts_get_distinct_versions(service: RunningService) -> None:
    key = new_key()
    writers = 12
    async with service.client() as client:
        responses = await asyncio.gather(
            *(
                client.put(f"/v1/templates/{key}", json=template_body(f"Version from {n}"))
                for n in range(writers)
            )
        )
        final = await client.get(f"/v1/templates/{key}")
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == list(range(1, writers + 1))
    # Exactly one PUT created the template; the others replaced it.
    assert sorted(r.status_code for r in responses) == [200] * (writers - 1) + [201]
    # The stored row is the one that got the highest version, whole.
    last = max(responses, key=lambda r: r.json()["version"])
    assert final.json()["version"] == writers
    assert final.json()["locales"] == last.json()["locales"]
    assert await stored_templates(service, key) == 1


async def test_concurrent_puts_and_deletes_never_reuse_a_version(
    service: RunningService,
) -> None:
    # A DELETE racing the PUT that creates the key must still wait for it: a DELETE that
    # locked nothing slipped between another PUT's read and its write (a 500).
    for _ in range(3):
        key = new_key()
        async with service.client() as client:
            calls: list[Any] = []
            for n in range(8):
                calls.append(client.put(f"/v1/templates/{key}", json=template_body(f"v{n}")))
                calls.append(client.delete(f"/v1/templates/{key}"))
            responses = await asyncio.gather(*calls)
        puts = [r for r in responses if r.request.method == "PUT"]
        deletes = [r for r in responses if r.request.method == "DELETE"]
        assert all(r.status_code in (200, 201) for r in puts), [r.text for r in puts]
        assert all(r.status_code in (204, 404) for r in deletes), [r.text for r in deletes]
        assert sorted(r.json()["version"] for r in puts) == list(range(1, 9))
        assert await last_version(service, key) == 8


async def test_builtins_are_listed_overridden_and_restored(service: RunningService) -> None:
    async with service.client() as client:
        listed = await client.get("/v1/templates", params={"limit": 500})
        builtin = await client.get("/v1/templates/task.completed")
        override = await client.put(
            "/v1/templates/task.completed",
            json=template_body("Done: {{ task.task_type }}", "{{ task.task_id }} is done"),
        )
        try:
            overridden = await client.get("/v1/templates/task.completed")
            listed_overridden = await client.get("/v1/templates", params={"limit": 500})
        finally:
            deleted = await client.delete("/v1/templates/task.completed")
        restored = await client.get("/v1/templates/task.completed")
        delete_builtin = await client.delete("/v1/templates/task.completed")

    assert listed.status_code == 200, listed.text
    items = {item["key"]: item for item in listed.json()["items"]}
    for key in ("task.completed", "task.failed", "task.log.error", "task.log.critical", "digest"):
        assert items[key]["builtin"] is True and items[key]["version"] == 0, items.get(key)
        assert items[key]["locales"] == ["en", "zh-CN"]
    assert builtin.status_code == 200
    assert builtin.json()["builtin"] is True and builtin.json()["version"] == 0
    assert builtin.json()["created_at"] is None
    assert set(builtin.json()["locales"]) == {"en", "zh-CN"}

    # The first PUT over a built-in creates the stored template: 201.
    assert override.status_code == 201, override.text
    assert override.json()["builtin"] is False and override.json()["version"] >= 1
    assert overridden.json()["locales"]["en"]["title"] == "Done: {{ task.task_type }}"
    entry = next(i for i in listed_overridden.json()["items"] if i["key"] == "task.completed")
    assert entry["builtin"] is False and entry["locales"] == ["en"]

    assert deleted.status_code == 204
    assert restored.json() == builtin.json()
    error = assert_error(delete_builtin, 404, "not_found")
    assert "built-in" in error["message"]


async def test_list_pages_through_stored_and_builtin_templates(service: RunningService) -> None:
    prefix = new_key("page")
    keys = [f"{prefix}.{n}" for n in range(5)]
    async with service.client() as client:
        for key in keys:
            assert (
                await client.put(f"/v1/templates/{key}", json=template_body())
            ).status_code == 201
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = await client.get("/v1/templates", params=params)
            assert page.status_code == 200, page.text
            seen += [item["key"] for item in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            pages += 1
            if cursor is None:
                break
            assert pages < 10_000
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert set(keys) <= set(seen)
    assert {"digest", "task.completed", "task.failed"} <= set(seen)


@pytest.mark.parametrize(
    "key", ["Upper", "-dash-first", "a" * 65, "sp ace", "ümlaut", "a/b", ".dot-first"]
)
async def test_a_key_outside_the_pattern_is_refused(service: RunningService, key: str) -> None:
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=template_body())
    if key == "a/b":
        assert response.status_code in (404, 405)  # no such route: nothing stored either way
        return
    assert_error(response, 422, "validation_error")
    assert await stored_templates(service, key) == 0


BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown locale tag": (
        template_body(xx_YY={"title": "t", "message": "m"}),
        "not a locale Babel knows",
    ),
    "not a tag at all": (template_body(**{"en US": {"title": "t", "message": "m"}}), "BCP 47"),
    "default locale missing": (template_body(default_locale="fr"), "default_locale 'fr'"),
    "one tag twice": (template_body(EN={"title": "t", "message": "m"}), "given twice"),
    "no title": ({"locales": {"en": {"message": "m"}}}, "title"),
    "unknown part": (
        {"locales": {"en": {"title": "t", "message": "m", "subject": "s"}}},
        "subject",
    ),
    "title source too long": (template_body("x" * 2001), "2000"),
    "message source too long": (template_body(message="x" * 20_001), "20000"),
    "no locales": ({"locales": {}}, "locales"),
    "NUL in a part": (template_body("a\x00b"), "NUL"),
    "NUL deep in the email html": (
        {"locales": {"en": {"title": "t", "message": "m", "email_html": "<p>\n" * 9 + "\x00"}}},
        "NUL",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_bodies_are_refused_with_422_and_store_nothing(
    service: RunningService, case: str
) -> None:
    body, expected = BAD_BODIES[case]
    key = new_key()
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=body)
    error = assert_error(response, 422, "validation_error")
    assert expected in error["message"] or any(
        expected in str(detail) for detail in error["details"] or []
    ), error
    assert error_locations(error) or error["message"]
    assert await stored_templates(service, key) == 0
    assert await last_version(service, key) is None


async def test_a_literal_title_over_its_output_limit_is_refused_at_put(
    service: RunningService,
) -> None:
    key = new_key()
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=template_body("x" * 201))
    error = assert_error(response, 422, "validation_error")
    assert error["details"]["part"] == "title" and error["details"]["limit"] == 200, error
    assert await stored_templates(service, key) == 0


async def test_a_template_body_over_the_request_limit_stays_413(service: RunningService) -> None:
    key = new_key()
    huge = "<p>x</p>" * (service.settings.max_body_bytes // 8 + 1)
    body = template_body()
    body["locales"]["en"]["email_html"] = huge
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=body)
    assert_error(response, 413, "payload_too_large")
    assert await stored_templates(service, key) == 0


async def test_templates_need_a_producer_key(service: RunningService) -> None:
    key = new_key()
    token = await service.user_token("u-templates")
    async with service.client(token=token) as as_user, service.client(token="nope") as anonymous:
        by_user = await as_user.put(f"/v1/templates/{key}", json=template_body())
        listed_by_user = await as_user.get("/v1/templates")
        by_nobody = await anonymous.get(f"/v1/templates/{key}")
        preview_by_user = await as_user.post("/v1/templates/digest/preview", json={})
    assert_error(by_user, 403, "forbidden")
    assert_error(listed_by_user, 403, "forbidden")
    assert_error(by_nobody, 401, "unauthorized")
    assert_error(preview_by_user, 403, "forbidden")
    assert await stored_templates(service, key) == 0


async def test_the_document_says_a_part_refuses_nul(service: RunningService) -> None:
    """A client built from the OpenAPI document must learn the rule the server applies: a part
    with a NUL is refused, so every part's published pattern refuses it too (schemathesis drew a
    schema-valid template with a NUL in its subject, which the server refused)."""
    async with service.client() as client:
        document = (await client.get("/openapi.json")).json()
    parts = document["components"]["schemas"]["LocaleParts"]["properties"]
    for name, schema in parts.items():
        [string] = [s for s in schema.get("anyOf", [schema]) if s.get("type") == "string"]
        pattern = ecma_regex(string["pattern"])
        assert pattern.search("Hello,\n{{ name }} — ✓"), name
        assert not pattern.search("Hello\n\x00"), name
