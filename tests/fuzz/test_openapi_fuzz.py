"""Schemathesis against the service's own OpenAPI document, with every check, served by a real
uvicorn on a fresh SQLite file and on a fresh PostgreSQL database.

This is ``st run --checks all`` in Python: the same engine and phases (examples, coverage,
fuzzing, stateful), every built-in check enabled, a producer API key. Whatever is sent, the
answer is never a 5xx, its status, body, content type and headers are the ones the document
declares, data that breaks the schema is refused with a 4xx, data the schema allows is not
refused, an undeclared method gets 405 with an ``Allow`` header that lists the path's methods,
and a missing credential is a 401. Zero findings pass.

Some rules no JSON Schema can state (two fields compared, DNS, CLDR's locales, Jinja syntax,
the variables a template uses) are documented in words instead, and a refusal of schema-valid
data is forgiven only when the server's error names one of them (``UNSTATABLE_RULES``). The
two formats the document names for values only the server can make or check get their
strategies from tests/fuzz/formats.py.

The suite run is small (``SUITE_EXAMPLES``); ``NOTIFIER_FUZZ_FULL=1`` makes it a full run
(``FULL_EXAMPLES``). The number of requests sent is printed at the end of the run; record the
last full run in tests/RESULTS.md.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from notifier.api import create_app
from notifier.vapid import generate_private_key
from tests.fuzz import formats  # noqa: F401  (registers the document's formats)
from tests.support.service import RunningService, make_settings
from tests.support.threaded import threaded_service

FULL = os.environ.get("NOTIFIER_FUZZ_FULL", "") not in ("", "0")
SUITE_EXAMPLES = 5
FULL_EXAMPLES = 100
MAX_EXAMPLES = FULL_EXAMPLES if FULL else SUITE_EXAMPLES

# Twilio and VAPID are configured so that their endpoints do their real work (a signature check,
# a key) instead of answering "not configured"; nothing is ever sent to Twilio: no worker runs.
CHANNEL_SETTINGS: dict[str, object] = {
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": "fuzz-twilio-auth-token",
    "twilio_from": "+15005550006",
    "vapid_private_key": generate_private_key(),
    "vapid_subject": "mailto:fuzz@example.com",
}

# (what the server's error says, why no schema can say it)
UNSTATABLE_RULES: list[tuple[str, str]] = [
    ("expires_at must be later than send_at", "two fields compared"),
    ("escalation steps must be in increasing after_seconds", "list items compared"),
    ("is already among the notification's channels", "two fields' lists compared"),
    ("since must not be later than until", "two parameters compared"),
    ("has no entry in locales", "a template's default_locale is one of its locales' keys"),
    ("is not a locale Babel knows", "a locale tag Babel has data for: CLDR decides"),
    ("syntax_error", "a template's parts are Jinja sources, parsed at PUT"),
    ("missing_variable", "the data must hold every variable the template uses"),
    ("unknown_template", "a template key names a stored or built-in template: the store decides"),
    ("unsafe_endpoint", "a push or webhook URL's host must resolve to public addresses: DNS"),
    ("webhook endpoints; delete one first", "a count across requests (WEBHOOK_MAX_ENDPOINTS)"),
    (
        "value is not a valid email address",
        "email-validator's rules beyond the address syntax: special-use domains (.local, .test, "
        "...) and internationalised domain labels",
    ),
]


def _operations() -> set[str]:
    """ "METHOD path" of every operation the app documents, read without serving it."""
    document = create_app(make_settings("sqlite+aiosqlite:///unused.db")).openapi()
    return {
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method in methods
        if method in {"get", "put", "post", "patch", "delete"}
    }


def _only_unstatable_rules(response: Any) -> bool:
    """Whether a 422 refused the request for rules of ``UNSTATABLE_RULES`` alone."""
    if response.status_code != 422:
        return False
    error = json.loads(response.content)["error"]
    details = error["details"]
    if isinstance(details, list):  # per field
        reasons = [f"{d['msg']} {d['type']}" for d in details]
    elif isinstance(details, dict):  # a template's: {"reason", "key", "locale", ...}
        reasons = [f"{error['message']} {details.get('reason')}"]
    else:
        reasons = [error["message"]]
    return all(any(rule in reason for rule, _ in UNSTATABLE_RULES) for reason in reasons)


def forgive_unstatable_rules(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    """schemathesis ``filter_failure`` hook: False drops the failure."""
    return not (failure.code == "ST202" and _only_unstatable_rules(response))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, RunningService]]:
    with threaded_service(str(request.param), **CHANNEL_SETTINGS) as service:
        yield str(request.param), service


def run_all_checks(service: RunningService) -> tuple[Counter[str], list[str]]:
    """Requests sent per operation, and every finding, as ``st run --checks all`` would."""
    config = SchemathesisConfig.from_dict(
        {
            "base-url": service.base_url,
            "headers": {"Authorization": f"Bearer {service.api_key}"},
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        }
    )
    config.projects.override.checks.update(included_check_names=["all"])  # --checks all
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json", config=config)
    schema.hook("filter_failure")(forgive_unstatable_rules)
    sent: Counter[str] = Counter()
    findings: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            sent[event.recorder.label] += len(event.recorder.interactions)
            for nodes in event.recorder.checks.values():
                findings += [
                    f"{event.recorder.label}: {node.name}: {node.failure_info.failure.title}\n"
                    f"{node.failure_info.code_sample}"
                    for node in nodes
                    if node.failure_info is not None
                ]
        elif isinstance(event, events.NonFatalError):
            findings.append(f"error in {event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return sent, findings


def test_every_check_passes_on_every_operation(
    served: tuple[str, RunningService], fuzz_requests: Counter[str]
) -> None:
    backend, service = served
    sent, findings = run_all_checks(service)
    fuzz_requests[backend] += sum(sent.values())
    assert not findings, "\n\n".join(dict.fromkeys(findings))  # each distinct finding once
    untested = _operations() - {label for label, count in sent.items() if count}
    assert not untested, f"operations schemathesis never called: {sorted(untested)}"
