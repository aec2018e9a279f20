"""``POST /v1/notifications`` is taken in front of every layer (notifier/api/enqueue_fast.py),
which then does their work itself: the body's deadline, the failed-authentication limit, the
error handlers' answers. Each is checked here as a client sees it; the other paths keep the
layers (tests/security: body limits, rate limits, connection limits)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from notifier.api import enqueue_fast
from notifier.api.app import NotifierApp, create_app
from notifier.api.body_limit import BodySizeLimit
from notifier.api.enqueue_fast import EnqueueFastPath
from notifier.api.rate_limit import TokenBuckets
from notifier.schemas.notification import NotificationCreate
from tests.api.helpers import assert_error, new_user, notification_body, notifications_of
from tests.support.service import RunningService, make_settings, running_service

FAILURE_BURST = 3


def _sent_to(answers: list[Message]) -> Send:
    async def send(message: Message) -> None:
        answers.append(message)

    return send


def _pieces(body: bytes, *, every: float, then_stall: bool = False) -> Receive:
    """A client sending ``body`` in three pieces, ``every`` seconds apart (its pace); with
    ``then_stall``, only the first piece, and nothing more."""
    cuts = [body[:5], body[5:10], body[10:]]

    async def receive() -> Message:
        if not cuts or (then_stall and len(cuts) < 3):
            await asyncio.Event().wait()  # a client that sends nothing more
        piece = cuts.pop(0)
        if len(cuts) < 2:
            await asyncio.sleep(every)
        return {"type": "http.request", "body": piece, "more_body": bool(cuts)}

    return receive


async def test_a_body_paced_within_the_timeout_is_read_whole() -> None:
    """The deadline is moved on by each piece: three pieces 0.6 timeouts apart (1.2 in all)
    are a body, as they were with a timeout per ``receive``."""
    limit = BodySizeLimit(_never_called, max_bytes=1024, body_timeout_seconds=0.25)
    body = b'{"user_id": "u", "title": "t", "message": "m"}'
    answers: list[Message] = []
    received = await limit.read_whole(_pieces(body, every=0.15), _sent_to(answers))
    assert received is not None
    assert b"".join(m["body"] for m in received) == body
    assert answers == []


async def test_a_body_that_stalls_is_answered_408_once_its_deadline_passes() -> None:
    limit = BodySizeLimit(_never_called, max_bytes=1024, body_timeout_seconds=0.2)
    answers: list[Message] = []
    started = time.monotonic()
    received = await limit.read_whole(
        _pieces(b"x" * 20, every=0, then_stall=True), _sent_to(answers)
    )
    assert received is None
    assert time.monotonic() - started >= 0.2
    assert [m["type"] for m in answers] == ["http.response.start", "http.response.body"]
    assert answers[0]["status"] == 408
    assert (b"connection", b"close") in answers[0]["headers"]
    assert b'"code":"request_timeout"' in answers[1]["body"]


async def test_a_read_cancelled_from_elsewhere_is_not_taken_for_its_deadline() -> None:
    """A request cancelled while its body is read (shutdown, a client gone) ends cancelled,
    with no 408, and its deadline does not outlive it."""
    limit = BodySizeLimit(_never_called, max_bytes=1024, body_timeout_seconds=0.2)
    reading = asyncio.Event()

    async def receive() -> Message:
        reading.set()
        await asyncio.Event().wait()
        raise AssertionError("never resumed")

    answers: list[Message] = []
    task = asyncio.create_task(limit.read_whole(receive, _sent_to(answers)))
    await reading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert answers == []
    # The next read still has its deadline kept.
    started = time.monotonic()
    stalled = _pieces(b"x" * 20, every=0, then_stall=True)
    assert await limit.read_whole(stalled, _sent_to(answers)) is None
    assert time.monotonic() - started >= 0.2
    assert answers[0]["status"] == 408


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the limit answers by itself")


def test_the_wait_is_what_take_would_answer_and_spends_nothing() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1.0, burst=2, clock=lambda: now[0])
    assert buckets.wait("a") is None  # a new key: a full bucket
    buckets.take("a")
    buckets.take("a")
    assert buckets.wait("a") == pytest.approx(1.0)
    now[0] = 0.5
    assert buckets.wait("a") == pytest.approx(0.5)
    assert buckets.wait("a") == buckets.take("a")  # the same answer; the take spent nothing
    assert buckets.wait("a", 3) == float("inf")  # past the burst: never
    assert TokenBuckets(rate=0, burst=1).wait("a") is None  # disabled


@pytest.fixture
async def failures_limited(database_url: str) -> AsyncIterator[RunningService]:
    settings = make_settings(
        database_url,
        rate_limit_auth_failures_per_minute=1,
        rate_limit_auth_failures_burst=FAILURE_BURST,
    )
    async with running_service(settings) as service:
        yield service


async def test_failed_authentications_on_the_enqueue_are_limited_and_successes_are_free(
    failures_limited: RunningService,
) -> None:
    attacker, bystander = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "192.0.2.9"}
    user = new_user()
    async with httpx.AsyncClient(base_url=failures_limited.base_url, timeout=30) as client:
        good = {"Authorization": f"Bearer {failures_limited.api_key}"}
        for _ in range(3 * FAILURE_BURST):  # successes spend no failure token
            sent = await client.post(
                "/v1/notifications", json=notification_body(user), headers={**good, **bystander}
            )
            assert sent.status_code == 202, sent.text
        for attempt in range(FAILURE_BURST):
            bad = {"Authorization": f"Bearer wrong-{attempt}", **attacker}
            refused = await client.post(
                "/v1/notifications", json=notification_body(user), headers=bad
            )
            assert_error(refused, 401, "unauthorized")
        spent = await client.post(
            "/v1/notifications", json=notification_body(user), headers={**good, **attacker}
        )
        assert_error(spent, 429, "rate_limited")
        assert int(spent.headers["retry-after"]) >= 1
    assert await notifications_of(failures_limited, user) == 3 * FAILURE_BURST


async def test_a_query_string_is_served_the_long_way(service: RunningService) -> None:
    """Not taken in front of log redaction (a token in a query string is blanked there), and
    answered as the route answers."""
    user = new_user()
    async with service.client() as client:
        sent = await client.post("/v1/notifications?token=abc", json=notification_body(user))
    assert sent.status_code == 202, sent.text
    assert await notifications_of(service, user) == 1


async def test_an_unexpected_error_is_the_same_500_on_both_paths(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path answers as Starlette's outermost layer does; the route's way (with an
    ``Idempotency-Key``) meets the same failure for comparison."""

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("notifier.api.routes.notifications.prepare", broken)
    async with service.client() as client:
        fast = await client.post("/v1/notifications", json=notification_body(new_user()))
        routed = await client.post(
            "/v1/notifications",
            json=notification_body(new_user()),
            headers={"Idempotency-Key": "k-500"},
        )
    assert_error(fast, 500, "internal_error")
    assert (fast.content, fast.headers["content-type"]) == (
        routed.content,
        routed.headers["content-type"],
    )


def test_a_middleware_added_to_the_app_sees_every_enqueue() -> None:
    """The fast path stands in front only of the layers it knows; one more (a deployment's
    tracing, say) turns it off, so that every request crosses that layer."""
    settings = make_settings("sqlite+aiosqlite:///unused.db")
    plain = create_app(settings)
    assert isinstance(plain, NotifierApp)
    plain.build_middleware_stack()
    assert isinstance(plain.enqueue_fast_path, EnqueueFastPath)

    class Tracing:
        def __init__(self, app: object) -> None:
            self.app = app

    traced = create_app(settings)
    assert isinstance(traced, NotifierApp)
    traced.add_middleware(Tracing)
    traced.build_middleware_stack()
    assert traced.enqueue_fast_path is None


async def test_when_the_outer_path_stands_aside_the_inner_one_serves(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FastAPI's telemetry on, the enqueue crosses every layer and is then served right
    inside the exception handlers, as before the outer path, not by the router."""
    app = service.app
    assert isinstance(app, NotifierApp)
    monkeypatch.setattr(app, "_telemetry_off", lambda: False)
    validated: list[bytes] = []
    validate = enqueue_fast._VALIDATE

    def counted(body: bytes) -> NotificationCreate:
        validated.append(body)
        return validate(body)

    monkeypatch.setattr(enqueue_fast, "_VALIDATE", counted)
    user = new_user()
    async with service.client() as client:
        sent = await client.post("/v1/notifications", json=notification_body(user))
    assert sent.status_code == 202, sent.text
    assert len(validated) == 1
    assert await notifications_of(service, user) == 1
