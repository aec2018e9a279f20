"""Recipient profiles, user tokens, push subscriptions and the VAPID public key."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.vapid import generate_private_key
from tests.api.helpers import (
    assert_error,
    error_locations,
    new_user,
    recipients_of,
    subscriptions_of,
)
from tests.support.service import RunningService, make_settings, running_service

P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


def subscription(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": P256DH, "auth": AUTH}}


@pytest.fixture(scope="module")
async def private_push_service(database_url: str) -> AsyncIterator[RunningService]:
    settings = make_settings(database_url, push_allow_private_endpoints=True)
    async with running_service(settings) as running:
        yield running


@pytest.fixture(scope="module")
async def vapid_service(database_url: str) -> AsyncIterator[RunningService]:
    settings = make_settings(
        database_url, vapid_private_key=generate_private_key(), vapid_subject="mailto:t@example.com"
    )
    async with running_service(settings) as running:
        yield running


async def test_put_and_get_recipient(service: RunningService) -> None:
    user = new_user()
    profile = {
        "email": "ada@example.com",
        "phone": "+14155550123",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "preferences": {"sms": False},
        "quiet_hours": {"start": "22:00", "end": "07:00"},
    }
    async with service.client() as client:
        put = await client.put(f"/v1/users/{user}/recipient", json=profile)
        got = await client.get(f"/v1/users/{user}/recipient")
        changed = await client.put(f"/v1/users/{user}/recipient", json={"email": "b@example.com"})
    assert put.status_code == 200, put.text
    body = put.json()
    for field, value in profile.items():
        if field != "quiet_hours":
            assert body[field] == value
    assert body["quiet_hours"]["start"] == "22:00" and body["quiet_hours"]["end"] == "07:00"
    assert body["user_id"] == user and body["sms_opted_out"] is False
    assert got.status_code == 200
    assert got.json() == body
    assert changed.status_code == 200
    assert changed.json()["email"] == "b@example.com"
    assert changed.json()["phone"] is None  # PUT replaces the profile
    assert changed.json()["created_at"] == body["created_at"]
    assert await recipients_of(service, user) == 1


async def test_patch_changes_only_the_fields_sent(service: RunningService) -> None:
    user = new_user()
    profile = {
        "email": "ada@example.com",
        "phone": "+14155550123",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "preferences": {"channels": {"sms": False}},
        "quiet_hours": {"start": "22:00", "end": "07:00", "defer": True},
    }
    path = f"/v1/users/{user}/recipient"
    async with service.client() as client:
        put = await client.put(path, json=profile)
        email = await client.patch(path, json={"email": "grace@example.com"})
        cleared = await client.patch(path, json={"phone": None, "preferences": None})
        nothing = await client.patch(path, json={})
        got = await client.get(path)
    assert put.status_code == 200, put.text
    assert email.status_code == 200, email.text
    assert email.json() == {
        **put.json(),
        "email": "grace@example.com",
        "updated_at": email.json()["updated_at"],
    }
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["phone"] is None and cleared.json()["preferences"] == {}
    assert cleared.json()["email"] == "grace@example.com"
    assert cleared.json()["quiet_hours"] == profile["quiet_hours"]
    assert cleared.json()["locale"] == "en-GB" and cleared.json()["timezone"] == "Europe/London"
    assert nothing.status_code == 200
    assert {k: v for k, v in nothing.json().items() if k != "updated_at"} == {
        k: v for k, v in cleared.json().items() if k != "updated_at"
    }
    assert got.json() == nothing.json()
    assert await recipients_of(service, user) == 1


async def test_patch_creates_the_profile_and_refuses_bad_fields(service: RunningService) -> None:
    user = new_user()
    path = f"/v1/users/{user}/recipient"
    async with service.client() as client:
        bad = await client.patch(path, json={"phone": "0415 555", "email": "x@example.com"})
        unknown = await client.patch(path, json={"nickname": "ada"})
        absent = await client.get(path)
        created = await client.patch(path, json={"locale": "de-DE"})
    assert_error(bad, 422, "validation_error")
    assert_error(unknown, 422, "validation_error")
    assert_error(absent, 404, "not_found")
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["locale"] == "de-DE" and body["email"] is None and body["preferences"] == {}
    assert body["sms_opted_out"] is False
    assert await recipients_of(service, user) == 1


async def test_patch_is_for_producers_only(service: RunningService) -> None:
    user = new_user()
    async with service.client(await service.user_token(user)) as owner:
        response = await owner.patch(f"/v1/users/{user}/recipient", json={"email": "a@b.co"})
    assert_error(response, 403, "forbidden")
    assert await recipients_of(service, user) == 0


async def test_owner_reads_own_recipient(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        await client.put(f"/v1/users/{user}/recipient", json={"email": "me@example.com"})
    async with service.client(await service.user_token(user)) as owner:
        response = await owner.get(f"/v1/users/{user}/recipient")
    assert response.status_code == 200, response.text
    assert response.json()["email"] == "me@example.com"


async def test_missing_recipient_is_404(service: RunningService) -> None:
    async with service.client() as client:
        response = await client.get(f"/v1/users/{new_user()}/recipient")
    assert_error(response, 404, "not_found")


async def test_mint_token(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        default = await client.post(f"/v1/users/{user}/tokens")
        short = await client.post(f"/v1/users/{user}/tokens", json={"ttl_seconds": 120})
        too_short = await client.post(f"/v1/users/{user}/tokens", json={"ttl_seconds": 5})
    now = datetime.now(UTC)
    assert default.status_code == 201, default.text
    assert set(default.json()) == {"token", "expires_at"}
    expires = datetime.fromisoformat(default.json()["expires_at"])
    expected = now + timedelta(seconds=service.settings.token_ttl_seconds)
    assert abs((expires - expected).total_seconds()) < 30
    assert short.status_code == 201, short.text
    short_expires = datetime.fromisoformat(short.json()["expires_at"])
    assert abs((short_expires - (now + timedelta(seconds=120))).total_seconds()) < 30
    error = assert_error(too_short, 422, "validation_error")
    assert "ttl_seconds" in error["message"]
    # The minted token works for that user's inbox.
    async with service.client(default.json()["token"]) as owner:
        inbox = await owner.get(f"/v1/users/{user}/notifications")
    assert inbox.status_code == 200, inbox.text


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9/push/x",
        "https://127.0.0.1/push/x",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/push",
        "https://[::1]/push",
        "ftp://push.example.com/x",
        "not a url",
    ],
)
async def test_unsafe_push_endpoint_is_422(service: RunningService, endpoint: str) -> None:
    user = new_user()
    async with service.client() as client:
        response = await client.post(
            f"/v1/users/{user}/push-subscriptions", json=subscription(endpoint)
        )
    error = assert_error(response, 422, "validation_error")
    assert ["body", "endpoint"] in error_locations(error), error
    assert await subscriptions_of(service, user) == 0


async def test_bad_push_keys_are_422(service: RunningService) -> None:
    user = new_user()
    body = subscription("https://push.example.com/x")
    body["keys"] = {"p256dh": "not base64!", "auth": AUTH}
    async with service.client() as client:
        response = await client.post(f"/v1/users/{user}/push-subscriptions", json=body)
    error = assert_error(response, 422, "validation_error")
    assert "p256dh" in error["message"]
    assert await subscriptions_of(service, user) == 0


async def test_push_subscribe_and_unsubscribe(private_push_service: RunningService) -> None:
    service = private_push_service
    user = new_user()
    endpoint = f"http://127.0.0.1:9/push/{user}"
    async with service.client(await service.user_token(user)) as owner:
        created = await owner.post(
            f"/v1/users/{user}/push-subscriptions", json=subscription(endpoint)
        )
        again = await owner.post(
            f"/v1/users/{user}/push-subscriptions", json=subscription(endpoint)
        )
        assert await subscriptions_of(service, user) == 1
        deleted = await owner.delete(
            f"/v1/users/{user}/push-subscriptions", params={"endpoint": endpoint}
        )
        deleted_again = await owner.delete(
            f"/v1/users/{user}/push-subscriptions", params={"endpoint": endpoint}
        )
    assert created.status_code == 201, created.text
    assert created.json()["endpoint"] == endpoint
    assert created.json()["user_id"] == user
    assert again.status_code == 200, again.text
    assert again.json()["id"] == created.json()["id"]
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert_error(deleted_again, 404, "not_found")
    assert await subscriptions_of(service, user) == 0


async def test_push_subscribe_with_key(private_push_service: RunningService) -> None:
    service = private_push_service
    user = new_user()
    async with service.client() as client:
        created = await client.post(
            f"/v1/users/{user}/push-subscriptions",
            json=subscription(f"http://127.0.0.1:9/push/{user}"),
        )
    assert created.status_code == 201, created.text
    assert await subscriptions_of(service, user) == 1


async def test_vapid_public_key_not_configured_is_404(service: RunningService) -> None:
    async with service.client() as client:
        response = await client.get("/v1/push/vapid-public-key", headers={"Authorization": ""})
    assert_error(response, 404, "not_found")


async def test_vapid_public_key(vapid_service: RunningService) -> None:
    async with vapid_service.client() as client:
        response = await client.get("/v1/push/vapid-public-key", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    key = response.json()["public_key"]
    assert "=" not in key
    point = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(point) == 65 and point[0] == 0x04


async def test_health_endpoints_need_no_credential(service: RunningService) -> None:
    async with service.client() as client:
        headers = {"Authorization": ""}
        health = await client.get("/healthz", headers=headers)
        ready = await client.get("/readyz", headers=headers)
        metrics = await client.get("/metrics", headers=headers)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
