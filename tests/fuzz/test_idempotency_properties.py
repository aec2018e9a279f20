"""Properties of the idempotency rules and of the rate limiter's token buckets.

- ``request_fingerprint`` depends on the body's content, not on the order of its JSON keys, and
  tells different bodies, methods and paths apart.
- Over HTTP (a real server, SQLite and PostgreSQL), for random notification bodies and random
  Idempotency-Keys: the same key with the same body (its keys in any order) → 200 and the very
  same notification; the same key with another body → 409; either way one row is stored.
- ``TokenBuckets`` on a fake clock never lets through more than ``burst + rate · elapsed``, and
  the wait it answers with is exact: a little earlier is refused, then is allowed.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from notifier.api.rate_limit import MAX_RETRY_AFTER_SECONDS, TokenBuckets, retry_after_header
from notifier.storage.idempotency import request_fingerprint
from tests.support.service import RunningService
from tests.support.threaded import threaded_service

# ---------------------------------------------------------------- strategies

# JSON the schema stores: PostgreSQL's JSONB holds no NUL in strings, so the API refuses NUL with a
# 422 (tested in tests/api); these properties are about what it accepts.
json_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)
json_keys = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_keys, inner, max_size=4),
    max_leaves=8,
)
json_objects = st.dictionaries(json_keys, json_values, max_size=5)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another order (lists keep theirs)."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


# Text the schema accepts: no control characters in single-line fields; no NUL in messages.
single_line = st.text(
    st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=40
).filter(str.strip)
message_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\x0b\x0c\x7f").filter(
        lambda c: c in "\t\n\r" or not (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0)
    ),
    min_size=1,
    max_size=200,
)
idempotency_keys = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
notification_bodies = st.fixed_dictionaries(
    {"title": single_line, "message": message_text},
    optional={
        "notification_type": st.sampled_from(["info", "success", "warning", "error", "progress"]),
        "priority": st.sampled_from(["low", "normal", "high", "urgent"]),
        "channels": st.lists(
            st.sampled_from(["websocket", "email", "sms"]), min_size=1, max_size=3, unique=True
        ),
        "related_task_id": single_line,
        "action_url": st.sampled_from(["https://example.com/a", "http://example.org/b?c=d"]),
        "metadata": st.dictionaries(json_keys, json_scalars, max_size=4),
    },
)


# ------------------------------------------------------------- fingerprints


@given(body=json_objects, seed=st.integers())
def test_fingerprint_ignores_key_order(body: dict[str, Any], seed: int) -> None:
    reordered = shuffled(body, random.Random(seed))
    assert request_fingerprint("POST", "/v1/notifications", reordered) == request_fingerprint(
        "POST", "/v1/notifications", body
    )


@given(first=json_objects, second=json_objects)
def test_fingerprint_tells_bodies_apart(first: dict[str, Any], second: dict[str, Any]) -> None:
    assume(first != second)
    assert request_fingerprint("POST", "/p", first) != request_fingerprint("POST", "/p", second)


@given(body=json_objects)
def test_fingerprint_covers_method_and_path(body: dict[str, Any]) -> None:
    one = request_fingerprint("POST", "/v1/notifications", body)
    assert one != request_fingerprint("POST", "/v1/notifications/batch", body)
    assert one != request_fingerprint("PUT", "/v1/notifications", body)


# ------------------------------------------------------------ over HTTP

HTTP_EXAMPLES = 25


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def producer(request: pytest.FixtureRequest) -> Iterator[tuple[RunningService, httpx.Client]]:
    with threaded_service(str(request.param)) as service:
        headers = {"Authorization": f"Bearer {service.api_key}"}
        with httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as client:
            yield service, client


def as_json_numbers(response: httpx.Response) -> Any:
    """The body with every number a float. PostgreSQL's JSONB keeps numbers as decimals, so a
    float written 3.6e+16 comes back as the integer 36000000000000000: the same JSON number,
    but not the same Python value."""
    return json.loads(response.text, parse_int=float)


def _stored(client: httpx.Client, user_id: str) -> int:
    inbox = client.get(f"/v1/users/{user_id}/notifications", params={"limit": 100})
    assert inbox.status_code == 200, inbox.text
    return len(inbox.json()["items"])


@settings(
    max_examples=HTTP_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=notification_bodies, key=idempotency_keys, seed=st.integers(), other_title=single_line)
def test_same_key_same_body_replays_and_other_body_conflicts(
    producer: tuple[RunningService, httpx.Client],
    body: dict[str, Any],
    key: str,
    seed: int,
    other_title: str,
) -> None:
    _, client = producer
    user_id = f"idem-{uuid.uuid4().hex[:12]}"
    key = f"{uuid.uuid4().hex[:8]}-{key}"  # unique per example; the rest is drawn
    body = {"user_id": user_id, **body}
    headers = {"Idempotency-Key": key}

    first = client.post("/v1/notifications", json=body, headers=headers)
    assert first.status_code == 202, first.text

    again = client.post(
        "/v1/notifications", json=shuffled(body, random.Random(seed)), headers=headers
    )
    assert again.status_code == 200, again.text
    assert as_json_numbers(again) == as_json_numbers(first)

    assume(other_title != body["title"])
    other = client.post("/v1/notifications", json={**body, "title": other_title}, headers=headers)
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "conflict"
    assert first.json()["id"] not in other.text

    assert _stored(client, user_id) == 1


# ------------------------------------------------------------ token buckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


rates = st.floats(min_value=0.01, max_value=1000, allow_nan=False)
bursts = st.integers(min_value=1, max_value=1000)
steps = st.lists(
    st.tuples(st.floats(min_value=0, max_value=10, allow_nan=False), st.integers(1, 5)),
    min_size=1,
    max_size=200,
)


@given(rate=rates, burst=bursts, steps=steps, keys=st.integers(1, 3))
def test_buckets_never_allow_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, int]], keys: int
) -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=rate, burst=burst, clock=clock)
    start = clock.now
    allowed = dict.fromkeys(range(keys), 0)
    for i, (advance, cost) in enumerate(steps):
        clock.now += advance
        key = i % keys
        if buckets.take(str(key), cost) is None:
            allowed[key] += cost
        budget = burst + rate * (clock.now - start)
        assert allowed[key] <= budget * (1 + 1e-9) + 1e-9, (key, allowed[key], budget)


@given(rate=rates, burst=bursts, spent=st.integers(0, 1000), cost=st.integers(1, 1000))
@example(rate=0.01, burst=865, spent=865, cost=865)  # a wait of a day and 100 s: capped
def test_buckets_retry_after_is_exact(rate: float, burst: int, spent: int, cost: int) -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=rate, burst=burst, clock=clock)
    if spent:
        assume(spent <= burst)
        assert buckets.take("k", spent) is None
    wait = buckets.take("k", cost)
    if cost > burst:
        assert wait == math.inf  # never: the caller must split the request
        return
    if burst - spent >= cost:
        assert wait is None
        return
    assert wait is not None and 0 < wait < math.inf
    assert wait == pytest.approx((cost - (burst - spent)) / rate)

    header = int(retry_after_header(wait))
    if wait <= MAX_RETRY_AFTER_SECONDS:
        assert max(1, wait) <= header < max(1, wait) + 1  # whole seconds, never too early
    else:  # longer waits say a day, the cap: asked again then, it says how long is left
        assert header == MAX_RETRY_AFTER_SECONDS

    if wait > 1e-3:  # a little earlier than told: still refused, and refusing spends nothing
        clock.now += wait * (1 - 1e-6)
        assert buckets.take("k", cost) is not None
        clock.now -= wait * (1 - 1e-6)
    clock.now += wait * (1 + 1e-9) + 1e-9  # when told: allowed
    assert buckets.take("k", cost) is None


@given(rate=rates, burst=bursts, refund=st.integers(0, 5000))
def test_buckets_refund_never_exceeds_burst(rate: float, burst: int, refund: int) -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=rate, burst=burst, clock=clock)
    assert buckets.take("k", 1) is None
    buckets.refund("k", refund)
    taken = 0
    while buckets.take("k", 1) is None:
        taken += 1
        assert taken <= burst
    assert taken == min(burst, burst - 1 + refund)


def test_buckets_disabled_allow_everything() -> None:
    buckets = TokenBuckets(rate=0, burst=1, clock=FakeClock())
    assert all(buckets.take("k", 10**6) is None for _ in range(100))
