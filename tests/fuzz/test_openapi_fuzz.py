"""Schemathesis against the service's own OpenAPI document, served by a real uvicorn on a fresh
SQLite file and on a fresh PostgreSQL database.

Every operation gets schema-valid (positive) and schema-invalid (negative) requests, with a
producer API key. Whatever is sent, the answer is never a 5xx, its status code is one the
document declares, its body matches the declared schema and content type, and data that breaks
the schema is refused with a 4xx.

The suite run is small (``SUITE_EXAMPLES`` per operation and mode). ``NOTIFIER_FUZZ_FULL=1``
makes it a full run (``FULL_EXAMPLES``: several thousand requests per backend); the number of
requests sent is printed at the end of the run. Record the last full run in tests/RESULTS.md.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from notifier.api import create_app
from notifier.vapid import generate_private_key
from tests.support.service import RunningService, make_settings
from tests.support.threaded import threaded_service

FULL = os.environ.get("NOTIFIER_FUZZ_FULL", "") not in ("", "0")
SUITE_EXAMPLES = 12
FULL_EXAMPLES = 150
MAX_EXAMPLES = FULL_EXAMPLES if FULL else SUITE_EXAMPLES

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Twilio and VAPID are configured so that their endpoints do their real work (a signature check,
# a key) instead of answering "not configured"; nothing is ever sent to Twilio: no worker runs.
CHANNEL_SETTINGS: dict[str, object] = {
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": "fuzz-twilio-auth-token",
    "twilio_from": "+15005550006",
    "vapid_private_key": generate_private_key(),
    "vapid_subject": "mailto:fuzz@example.com",
}


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation the app documents, read without serving it."""
    document = create_app(make_settings("sqlite+aiosqlite:///unused.db")).openapi()
    return [
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method in methods
        if method in {"get", "put", "post", "patch", "delete"}
    ]


OPERATIONS = _operations()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, RunningService, Any]]:
    backend = str(request.param)
    with threaded_service(backend, **CHANNEL_SETTINGS) as service:
        schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")
        yield backend, service, schema


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms_to_its_schema(
    served: tuple[str, RunningService, Any],
    http: requests.Session,
    fuzz_requests: Counter[str],
    method: str,
    path: str,
) -> None:
    backend, service, schema = served
    operation = schema[path][method]
    auth = {"Authorization": f"Bearer {service.api_key}"}
    # The credential is fixed, not generated: requests without one are tests/security's job.
    strategy = st.one_of(
        operation.as_strategy(generation_mode=mode, headers=auth)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    )

    @given(case=strategy)
    @settings(
        max_examples=2 * MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def exchange(case: schemathesis.Case) -> None:
        fuzz_requests[backend] += 1
        response = case.call(base_url=service.base_url, session=http, headers=auth, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=auth)

    exchange()
