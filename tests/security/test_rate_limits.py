"""Rate limits: per API key (every producer request), per recipient (notifications enqueued for
one user), and per client address (requests with a user token; failed authentications). Over
the limit → 429, the JSON envelope, an integer ``Retry-After``, and nothing written. Each test
starts a service of its own with small limits.

Every client here comes from 127.0.0.1, which uvicorn trusts as a proxy: a request with
``X-Forwarded-For`` counts as coming from that address, as it would behind a load balancer."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from notifier.models import Notification
from notifier.settings import Settings
from tests.security.conftest import assert_envelope
from tests.support.service import RunningService, make_settings, running_service

KEY_RATE, KEY_BURST = 1, 5  # per second: slow enough that a refill never races the test
RECIPIENT_RATE, RECIPIENT_BURST = 10, 3  # per minute
USER_RATE, USER_BURST = 1, 5  # per second
FAILURE_RATE, FAILURE_BURST = 6, 4  # per minute: one failure back every 10 s


@pytest.fixture
async def key_limited(database_url: str) -> AsyncIterator[RunningService]:
    settings = make_settings(
        database_url, rate_limit_key_per_second=KEY_RATE, rate_limit_key_burst=KEY_BURST
    )
    async with running_service(settings) as service:
        yield service


@pytest.fixture
async def recipient_limited(database_url: str) -> AsyncIterator[RunningService]:
    settings = make_settings(
        database_url,
        rate_limit_recipient_per_minute=RECIPIENT_RATE,
        rate_limit_recipient_burst=RECIPIENT_BURST,
    )
    async with running_service(settings) as service:
        yield service


@pytest.fixture
async def client_limited(database_url: str) -> AsyncIterator[RunningService]:
    settings = make_settings(
        database_url,
        rate_limit_user_per_second=USER_RATE,
        rate_limit_user_burst=USER_BURST,
        rate_limit_auth_failures_per_minute=FAILURE_RATE,
        rate_limit_auth_failures_burst=FAILURE_BURST,
    )
    async with running_service(settings) as service:
        yield service


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def assert_rate_limited(response: httpx.Response) -> int:
    """The 429 envelope; returns its Retry-After, which must be whole seconds."""
    assert_envelope(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert re.fullmatch(r"[1-9][0-9]*", retry_after), retry_after
    return int(retry_after)


def new_user() -> str:
    return f"rl-{uuid.uuid4().hex[:10]}"


async def notifications_of(service: RunningService, user_id: str) -> int:
    async with service.context.sessions() as session:
        query = select(func.count()).where(Notification.user_id == user_id)
        return int((await session.execute(query)).scalar_one())


async def test_api_key_over_its_burst_gets_429(key_limited: RunningService) -> None:
    user = new_user()
    body = {"user_id": user, "title": "t", "message": "m"}
    async with key_limited.client() as client:
        answers = [(await client.post("/v1/notifications", json=body)) for _ in range(KEY_BURST)]
        assert [a.status_code for a in answers] == [202] * KEY_BURST
        refused = await client.post("/v1/notifications", json=body)
        retry_after = assert_rate_limited(refused)
        assert retry_after == 1  # one token comes back within a second
        assert (await client.get("/healthz")).status_code == 200  # no credential, no limit

    # The other key has a bucket of its own.
    async with key_limited.client("test-key-2-0123456789") as other:
        assert (await other.post("/v1/notifications", json=body)).status_code == 202
    assert await notifications_of(key_limited, user) == KEY_BURST + 1

    # Waiting as told is enough.
    await asyncio.sleep(retry_after)
    async with key_limited.client() as client:
        assert (await client.post("/v1/notifications", json=body)).status_code == 202


async def test_api_key_limit_covers_reads_too(key_limited: RunningService) -> None:
    async with key_limited.client("test-key-2-0123456789") as client:
        statuses = [
            (await client.get(f"/v1/notifications/{uuid.uuid4()}")).status_code
            for _ in range(KEY_BURST + 1)
        ]
        assert statuses[:KEY_BURST] == [404] * KEY_BURST
        last = await client.get(f"/v1/notifications/{uuid.uuid4()}")
    assert_rate_limited(last)


async def test_recipient_over_its_burst_gets_429_and_nothing_is_stored(
    recipient_limited: RunningService,
) -> None:
    user, bystander = new_user(), new_user()
    async with recipient_limited.client() as client:
        for _ in range(RECIPIENT_BURST):
            sent = await client.post(
                "/v1/notifications", json={"user_id": user, "title": "t", "message": "m"}
            )
            assert sent.status_code == 202, sent.text
        refused = await client.post(
            "/v1/notifications", json={"user_id": user, "title": "one too many", "message": "m"}
        )
        retry_after = assert_rate_limited(refused)
        # One notification's worth comes back in 60/10 = 6 s.
        assert retry_after == 60 // RECIPIENT_RATE
        assert refused.json()["error"]["details"] == {"user_id": user}

        # Another recipient is not held back.
        fine = await client.post(
            "/v1/notifications", json={"user_id": bystander, "title": "t", "message": "m"}
        )
        assert fine.status_code == 202, fine.text
    assert await notifications_of(recipient_limited, user) == RECIPIENT_BURST


async def test_a_batch_over_a_recipients_limit_is_refused_whole(
    recipient_limited: RunningService,
) -> None:
    user, bystander = new_user(), new_user()
    spent = RECIPIENT_BURST - 1
    items = [{"user_id": bystander, "title": "t", "message": "m"}] + [
        {"user_id": user, "title": f"#{i}", "message": "m"} for i in range(2)
    ]
    async with recipient_limited.client() as client:
        for _ in range(spent):
            one = await client.post(
                "/v1/notifications", json={"user_id": user, "title": "t", "message": "m"}
            )
            assert one.status_code == 202, one.text
        # Two more for `user` fit the burst but not what is left of it.
        refused = await client.post("/v1/notifications/batch", json={"notifications": items})
        assert_rate_limited(refused)
        assert refused.json()["error"]["details"] == {"user_id": user}
        # All or none: the bystander's share was not spent either.
        for _ in range(RECIPIENT_BURST):
            one = await client.post(
                "/v1/notifications", json={"user_id": bystander, "title": "t", "message": "m"}
            )
            assert one.status_code == 202, one.text
    assert await notifications_of(recipient_limited, user) == spent
    assert await notifications_of(recipient_limited, bystander) == RECIPIENT_BURST


async def test_a_batch_larger_than_the_burst_says_it_can_never_pass(
    recipient_limited: RunningService,
) -> None:
    """More notifications for one recipient than its burst can never pass: not a 429 (whose
    Retry-After a client would obey forever) but a 422 that says to split the batch."""
    user = new_user()
    items = [{"user_id": user, "title": "t", "message": "m"}] * (RECIPIENT_BURST + 1)
    async with recipient_limited.client() as client:
        refused = await client.post("/v1/notifications/batch", json={"notifications": items})
        assert_envelope(refused, 422, "validation_error")
        assert "split" in refused.json()["error"]["message"]
        # Nothing was spent: the burst is still whole.
        fits = await client.post(
            "/v1/notifications/batch", json={"notifications": items[:RECIPIENT_BURST]}
        )
        assert fits.status_code == 202, fits.text
    assert await notifications_of(recipient_limited, user) == RECIPIENT_BURST


async def test_user_token_requests_are_limited_per_client_address(
    client_limited: RunningService,
) -> None:
    user = new_user()
    token = await client_limited.user_token(user)
    inbox = f"/v1/users/{user}/notifications"
    async with client_limited.client(token) as client:
        answers = [(await client.get(inbox)).status_code for _ in range(USER_BURST)]
        assert answers == [200] * USER_BURST
        retry_after = assert_rate_limited(await client.get(inbox))
        assert retry_after == 1
        # The same token from another address has a budget of its own.
        assert (await client.get(inbox, headers=from_address("198.51.100.7"))).status_code == 200
    # A producer from the spent address is held back by its key's limit only.
    async with client_limited.client() as producer:
        assert (await producer.get(inbox)).status_code == 200

    await asyncio.sleep(retry_after)  # waiting as told is enough
    async with client_limited.client(token) as client:
        assert (await client.get(inbox)).status_code == 200


async def test_failed_authentications_are_limited_per_client_address(
    client_limited: RunningService,
) -> None:
    attacker, bystander = from_address("203.0.113.9"), from_address("198.51.100.8")
    path = "/v1/users/someone/notifications"
    async with httpx.AsyncClient(base_url=client_limited.base_url, timeout=30) as client:
        for attempt in range(FAILURE_BURST):
            bad = {"Authorization": f"Bearer wrong-key-{attempt}", **attacker}
            assert_envelope(await client.get(path, headers=bad), 401, "unauthorized")
        # Spent: refused before the credential is looked at, so a good key is refused too,
        # and so is a request with no credential at all.
        good = {"Authorization": f"Bearer {client_limited.api_key}"}
        retry_after = assert_rate_limited(await client.get(path, headers={**good, **attacker}))
        assert retry_after == 60 // FAILURE_RATE
        assert_rate_limited(await client.get(path, headers=attacker))
        # Other addresses are not held back; public paths need no credential and are not.
        assert (await client.get(path, headers={**good, **bystander})).status_code == 200
        bad = {"Authorization": "Bearer still-wrong", **bystander}
        assert_envelope(await client.get(path, headers=bad), 401, "unauthorized")
        assert (await client.get("/healthz", headers=attacker)).status_code == 200


async def test_successful_authentications_spend_nothing(client_limited: RunningService) -> None:
    address = from_address("192.0.2.44")
    async with client_limited.client() as client:
        for _ in range(3 * FAILURE_BURST):
            answer = await client.get("/v1/users/someone/notifications", headers=address)
            assert answer.status_code == 200, answer.text


def test_the_defaults_are_what_the_settings_say() -> None:
    """README's configuration table documents these; keep both in step."""
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    assert defaults["rate_limit_key_per_second"] == 200
    assert defaults["rate_limit_key_burst"] == 400
    assert defaults["rate_limit_recipient_per_minute"] == 120
    assert defaults["rate_limit_recipient_burst"] == 1000
    assert defaults["rate_limit_user_per_second"] == 20
    assert defaults["rate_limit_user_burst"] == 100
    assert defaults["rate_limit_auth_failures_per_minute"] == 30
    assert defaults["rate_limit_auth_failures_burst"] == 30
