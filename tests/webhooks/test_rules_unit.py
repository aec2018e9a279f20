"""The pure parts, as tables: what an answer makes of a delivery, the retry schedule setting,
the envelope and the signature (checked with ``standardwebhooks``, as a receiver would)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Histogram
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifier.metrics.instruments import LATENCY_BUCKETS
from notifier.metrics.webhooks import WebhookMetrics
from notifier.models.base import utcnow
from notifier.models.webhook import WebhookDeliveryStatus as Status
from notifier.settings import Settings
from notifier.storage.webhook_queue import ClaimedDelivery
from notifier.webhooks.events import data_json, envelope_body, matches
from notifier.webhooks.signing import new_key, secret_text, signature_headers
from workers.webhook_attempt import AttemptResult, decide
from workers.webhook_slots import AHEAD, REFILL_AT, EndpointSlots

SCHEDULE = [5.0, 300.0, 1800.0]


def _delivery(attempts: int) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        attempts=attempts,
        event_type="webhook.test",
        body=b"{}",
        url="https://example.com/hook",
        keys=(new_key(),),
    )


@pytest.mark.parametrize(
    ("code", "error", "attempts_before", "status", "pause", "disabled"),
    [
        (200, None, 0, Status.SUCCEEDED, None, False),
        (204, None, 6, Status.SUCCEEDED, None, False),
        (410, "HTTP 410: the endpoint is gone; disabled", 0, Status.FAILED, None, True),
        (500, "HTTP 500", 0, Status.RETRYING, 5.0, False),
        (503, "HTTP 503", 1, Status.RETRYING, 300.0, False),
        (404, "HTTP 404", 2, Status.RETRYING, 1800.0, False),
        (302, "HTTP 302: redirect not followed (Location: -)", 0, Status.RETRYING, 5.0, False),
        (None, "timeout: no answer within 10 s", 0, Status.RETRYING, 5.0, False),
        (None, "connection failed: ...", 2, Status.RETRYING, 1800.0, False),
        (500, "HTTP 500", 3, Status.FAILED, None, False),  # past the schedule's last entry
        (
            None,
            "refused: the endpoint's address is not public (10.0.0.1)",
            3,
            Status.FAILED,
            None,
            False,
        ),
    ],
)
def test_what_an_answer_makes_of_a_delivery(
    code: int | None,
    error: str | None,
    attempts_before: int,
    status: Status,
    pause: float | None,
    disabled: bool,
) -> None:
    before = utcnow()
    outcome = decide(_delivery(attempts_before), AttemptResult(code, error, 12, before), SCHEDULE)
    assert outcome.status == status
    assert outcome.attempt == attempts_before + 1
    assert (outcome.disable_endpoint is not None) is disabled
    if pause is None:
        assert outcome.next_attempt_at is None
    else:
        assert outcome.next_attempt_at is not None
        waited = (outcome.next_attempt_at - before).total_seconds()
        assert pause <= waited < pause + 1


def test_retry_schedule_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().webhook_retry_schedule == [5, 300, 1800, 7200, 18000, 36000, 36000]
    monkeypatch.setenv("NOTIFIER_WEBHOOK_RETRY_SCHEDULE", "0.5, 2,10")
    assert Settings().webhook_retry_schedule == [0.5, 2, 10]
    for bad in ("", "soon", "5,-1"):
        monkeypatch.setenv("NOTIFIER_WEBHOOK_RETRY_SCHEDULE", bad)
        with pytest.raises(ValidationError, match="webhook_retry_schedule"):
            Settings()


def test_the_body_is_the_same_bytes_for_the_same_event() -> None:
    event_id, at = uuid.uuid4(), datetime(2026, 12, 5, 10, 0, 0, 123456, tzinfo=UTC)
    first = envelope_body(event_id, "task.failed", at, data_json({"b": 1, "a": "ü"}))
    assert first == envelope_body(event_id, "task.failed", at, data_json({"b": 1, "a": "ü"}))
    assert json.loads(first)["data"] == {"b": 1, "a": "ü"}
    assert first.decode() == (
        f'{{"id":"{event_id}","type":"task.failed",'
        '"timestamp":"2026-12-05T10:00:00.123456Z","data":{"b":1,"a":"ü"}}'
    )


@pytest.mark.parametrize(
    ("filter_", "event_type", "wanted"),
    [
        (["*"], "notification.sent", True),
        (["notification.sent"], "notification.sent", True),
        (["notification.sent"], "notification.delivered", False),
        (["task.failed", "*"], "webhook.test", True),
    ],
)
def test_event_filter(filter_: list[str], event_type: str, wanted: bool) -> None:
    assert matches(filter_, event_type) is wanted


def test_signatures_verify_with_standardwebhooks() -> None:
    current, previous = new_key(), new_key()
    body, event_id, now = b'{"x":1}', str(uuid.uuid4()), utcnow()
    one = signature_headers(event_id, body, [current], now)
    two = signature_headers(event_id, body, [current, previous], now)
    assert one["webhook-id"] == event_id
    assert one["webhook-timestamp"] == str(int(now.timestamp()))
    assert Webhook(secret_text(current)).verify(body, one) == {"x": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_text(previous)).verify(body, one)
    assert len(two["webhook-signature"].split(" ")) == 2
    for key in (current, previous):
        Webhook(secret_text(key)).verify(body, two)
    with pytest.raises(WebhookVerificationError):  # another body under the same headers
        Webhook(secret_text(current)).verify(b'{"x":2}', two)
    stale = signature_headers(event_id, body, [current], now - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):  # receivers refuse an old timestamp
        Webhook(secret_text(current)).verify(body, stale)


def test_slots_bound_each_endpoint_and_take_turns() -> None:
    slow, fast = uuid.uuid4(), uuid.uuid4()
    slots = EndpointSlots(per_endpoint=2, total=3)
    for endpoint in [slow] * (2 * AHEAD) + [fast] * 2:
        slots.add(dataclasses.replace(_delivery(0), endpoint_id=endpoint))
    started = []
    while (delivery := slots.next_ready()) is not None:
        started.append(delivery)
    # Three at once in all, two at most to one endpoint, the endpoints taking turns.
    assert [d.endpoint_id for d in started] == [slow, fast, slow]
    assert (slots.held, slots.sending) == (2 * AHEAD + 2, 3)
    assert slots.full_endpoints() == [slow]  # it holds AHEAD times its bound: no more of it
    assert slots.held_per_endpoint() == {slow: 2 * AHEAD, fast: 2}
    # The fast endpoint's request ends: its other one starts; the slow one stays at its bound.
    slots.done(started[1])
    following = slots.next_ready()
    assert following is not None and following.endpoint_id == fast
    assert slots.next_ready() is None
    # A stopping sender takes back what never started: the slow endpoint's others.
    assert [d.endpoint_id for d in slots.take_waiting()] == [slow] * (2 * AHEAD - 2)
    assert (slots.held, slots.sending, slots.wants_more) == (3, 3, True)


def test_a_claim_goes_out_with_refill_at_rounds_left_and_never_exceeds_the_hold() -> None:
    slots = EndpointSlots(per_endpoint=4, total=4)
    for _ in range(AHEAD * 4):
        slots.add(_delivery(0))
    assert (slots.room, slots.wants_more) == (0, False)
    while slots.held > REFILL_AT * 4:
        assert slots.wants_more is False  # a claim would bring less than its worth
        delivery = slots.next_ready()
        assert delivery is not None
        slots.done(delivery)
    # The next claim goes out while REFILL_AT rounds are still held, and may bring only what
    # tops the hold up to AHEAD rounds.
    assert (slots.room, slots.wants_more) == ((AHEAD - REFILL_AT) * 4, True)
    assert 0 < REFILL_AT < AHEAD


def test_a_batch_of_attempts_shows_in_the_histogram_as_each_observed_alone() -> None:
    durations = [0.0004, 0.003, 0.003, 0.25, 7.5, 600.0, LATENCY_BUCKETS[2]]
    metrics = WebhookMetrics()
    metrics.observe_attempts(("succeeded", seconds) for seconds in durations)
    alone_registry = CollectorRegistry()
    alone = Histogram("alone", "", buckets=LATENCY_BUCKETS, registry=alone_registry)
    for seconds in durations:
        alone.observe(seconds)

    def series(registry: CollectorRegistry, name: str) -> list[tuple[str, dict[str, str], float]]:
        [family] = [f for f in registry.collect() if f.name == name]
        return [
            (s.name.removeprefix(name), s.labels, s.value)
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    batched = series(metrics.registry, "notifier_webhook_attempt_duration_seconds")
    assert batched == series(alone_registry, "alone")
    assert ("_count", {}, len(durations)) in batched
