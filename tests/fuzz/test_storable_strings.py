"""Every string the API stores refuses what the database cannot hold: a NUL (PostgreSQL's text
has none; a NUL in a push endpoint was a 500) and, in JSON bodies, a lone UTF-16 surrogate
(``"\\ud800"`` is valid JSON that UTF-8 cannot encode). A property over every string of every
operation, on SQLite and PostgreSQL.

The strings come from the service's own OpenAPI document: every string field of every JSON
body (nested objects, array items, the keys and values of free-form JSON objects), every string
query parameter and path parameter. So a field is covered the day it is added. For each, a
schema-valid request is drawn (schemathesis, positive data), the field gets a value with a bad
character inserted (into its valid value when the draw has one), and a body's string must be
refused with a 422 naming the field; a parameter, which is not stored but compared with columns,
must never cause a 500.

The Twilio status callback is left out: its form body is read only once Twilio's signature over
it checks out, so nobody else can send it anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core import NotSet

from notifier.api import create_app
from notifier.vapid import generate_private_key
from tests.fuzz import formats  # noqa: F401  (registers the document's formats)
from tests.support.service import RunningService, make_settings
from tests.support.threaded import threaded_service

EXAMPLES = 4
UNSIGNED_FORM = "POST /v1/webhooks/twilio/status"
# Markers in a field path: a free-form JSON object's keys, and its values.
KEY, VALUE = "<key>", "<value>"
Step = str | int


@dataclass(frozen=True)
class StringField:
    method: str
    path: str
    location: str  # body, query or path
    steps: tuple[Step, ...]  # where in the body; the parameter name otherwise

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.location}:{'.'.join(map(str, self.steps))}"

    @property
    def error_loc(self) -> list[Step]:
        """Where the 422 must point: the field, or the free-form object that holds it."""
        steps = list(self.steps)
        if steps and steps[-1] in (KEY, VALUE):
            steps = steps[:-1]
        return [self.location, *steps]


def _document() -> dict[str, Any]:
    document: dict[str, Any] = create_app(make_settings("sqlite+aiosqlite:///unused.db")).openapi()
    return document


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def _string_steps(
    schema: dict[str, Any], document: dict[str, Any], prefix: tuple[Step, ...] = ()
) -> Iterator[tuple[Step, ...]]:
    schema = _resolve(schema, document)
    for branch in schema.get("anyOf", []):
        yield from _string_steps(branch, document, prefix)
    if schema.get("type") == "string" or "enum" in schema:
        yield prefix
    elif schema.get("type") == "array":
        yield from _string_steps(schema["items"], document, (*prefix, 0))
    elif "properties" in schema:
        for name, member in schema["properties"].items():
            yield from _string_steps(member, document, (*prefix, name))
    elif schema.get("type") == "object":  # free-form JSON: its keys and its values
        yield (*prefix, KEY)
        yield (*prefix, VALUE)


def string_fields() -> list[StringField]:
    document = _document()
    fields: list[StringField] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if f"{method.upper()} {path}" == UNSIGNED_FORM:
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                fields += [
                    StringField(method.upper(), path, "body", steps)
                    for steps in dict.fromkeys(_string_steps(body["schema"], document))
                ]
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("query", "path") and any(
                    True for _ in _string_steps(parameter["schema"], document)
                ):
                    fields.append(
                        StringField(method.upper(), path, parameter["in"], (parameter["name"],))
                    )
    return fields


FIELDS = string_fields()
BAD_IN_JSON = ["\x00", "\ud800", "\udfff", "\udbff"]
BAD_IN_URL = ["\x00"]  # a URL cannot carry a lone surrogate: its bytes are UTF-8


# Values the server takes where a random schema-valid one may not do (a push endpoint's host
# must resolve to a public address): the bad character goes into one of these instead.
SERVER_VALID = {"endpoint": "https://8.8.8.8/push/subscription-1"}


def with_bad_character(valid: Any, bad: str, where: int) -> str:
    text = valid if isinstance(valid, str) and valid else "abc"
    cut = where % (len(text) + 1)
    return text[:cut] + bad + text[cut:]


def _place(container: Any, steps: tuple[Step, ...], bad: str, where: int) -> Any:
    """``container`` with the string at ``steps`` replaced by a bad one (parents created)."""
    step, rest = steps[0], steps[1:]
    if step == KEY:
        return {**(container or {}), with_bad_character("key", bad, where): "value"}
    if step == VALUE:
        return {**(container or {}), "key": with_bad_character(None, bad, where)}
    if isinstance(step, int):
        items = list(container) if isinstance(container, list) and container else [None]
        items[0] = (
            _place(items[0], rest, bad, where) if rest else with_bad_character(items[0], bad, where)
        )
        return items
    current = dict(container) if isinstance(container, dict) else {}
    if rest:
        current[step] = _place(current.get(step), rest, bad, where)
    else:
        valid = SERVER_VALID.get(step, current.get(step))
        current[step] = with_bad_character(valid, bad, where)
    return current


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[RunningService, Any]]:
    # VAPID configured so that push subscriptions do their real work.
    settings = {"vapid_private_key": generate_private_key(), "vapid_subject": "mailto:f@x.org"}
    with threaded_service(str(request.param), **settings) as service:
        schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")
        yield service, schema


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.mark.parametrize("field", FIELDS, ids=str)
def test_a_string_the_database_cannot_hold_is_refused(
    served: tuple[RunningService, Any], http: requests.Session, field: StringField
) -> None:
    service, schema = served
    operation = schema[field.path][field.method]
    auth = {"Authorization": f"Bearer {service.api_key}"}
    bad_characters = BAD_IN_JSON if field.location == "body" else BAD_IN_URL
    valid_cases = operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)

    @given(case=valid_cases, bad=st.sampled_from(bad_characters), where=st.integers(0, 1000))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def refused(case: schemathesis.Case, bad: str, where: int) -> None:
        name = str(field.steps[0])
        body, query = case.body, dict(case.query or {})
        path_parameters = dict(case.path_parameters or {})
        if field.location == "body":
            body = _place(body, field.steps, bad, where)
        elif field.location == "query":
            query[name] = with_bad_character(query.get(name), bad, where)
        else:
            path_parameters[name] = with_bad_character(path_parameters.get(name), bad, where)
        url = service.base_url + field.path
        for parameter, value in path_parameters.items():
            url = url.replace(f"{{{parameter}}}", quote(str(value), safe=""))
        headers = {**(case.headers or {}), **auth}
        content = None
        if body is not None and not isinstance(body, NotSet):
            content = json.dumps(body).encode()  # ASCII: a lone surrogate travels as \\udXXX
            headers["Content-Type"] = "application/json"
        response = http.request(
            field.method, url, params=query, data=content, headers=headers, timeout=30
        )

        if field.location != "body":
            # A parameter is not stored, but it is compared with columns (PostgreSQL refused
            # NUL there too: a 500). A cursor's decoding drops what is not base64.
            assert response.status_code < 500, (str(field), response.status_code, response.text)
            return
        assert response.status_code == 422, (str(field), response.status_code, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error", error
        locations = [detail["loc"] for detail in error["details"]]
        wanted = field.error_loc
        assert any(loc[: len(wanted)] == wanted for loc in locations), (wanted, locations)

    refused()
