"""``GET /v1/notifications``: every user's notifications for operators, newest first, on both
databases: the dead letter from real failures (an SMTP peer refusing with 550), the filters,
keyset paging, and a 422 for every bad parameter."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.dispatch.harness import Stack, running_stack
from tests.peers.smtp import SmtpPeer


def new_user() -> str:
    return f"srch-{uuid.uuid4().hex[:10]}"


async def search(stack: Stack, **params: Any) -> dict[str, Any]:
    response = await stack.api.get("/v1/notifications", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


async def test_dead_letter_lists_failed_channels_newest_first(
    db_url: str, smtp_peer: SmtpPeer
) -> None:
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        good, refused = new_user(), new_user()
        await stack.put_recipient(good, email="ops@example.com")
        await stack.put_recipient(refused, email="nouser@example.com")
        delivered = await stack.notify(user_id=good, title="ok", message="m", channels=["email"])
        failed = [
            await stack.notify(user_id=refused, title=f"no {i}", message="m", channels=["email"])
            for i in range(3)
        ]
        for n in [delivered, *failed]:
            await stack.wait_settled(n["id"])
        dead = await search(stack, channel_status="failed")
        dead_email = await search(stack, channel="email", channel_status="failed")
        dead_sms = await search(stack, channel="sms", channel_status="failed")
        by_status = await search(stack, status="failed", user_id=refused)

    newest_first = [n["id"] for n in reversed(failed)]
    assert ids(dead) == newest_first and dead["next_cursor"] is None
    assert ids(dead_email) == newest_first
    assert ids(dead_sms) == []
    assert ids(by_status) == newest_first
    email = dead["items"][0]["delivery_status"]["email"]
    assert email["status"] == "failed" and email["attempts"] == 1
    assert "550" in email["last_error"]


async def test_filters_and_keyset_paging(db_url: str) -> None:
    async with running_stack(db_url, worker=False) as stack:
        alice, bob = new_user(), new_user()
        made = []
        for i in range(5):
            made.append(
                await stack.notify(user_id=alice, title=f"a{i}", message="m", channels=["email"])
            )
        other = await stack.notify(user_id=bob, title="b", message="m", channels=["websocket"])
        everyone = await search(stack, limit=200)
        first = await search(stack, user_id=alice, limit=2)
        second = await search(stack, user_id=alice, limit=2, cursor=first["next_cursor"])
        third = await search(stack, user_id=alice, limit=2, cursor=second["next_cursor"])
        by_channel = await search(stack, channel="websocket")
        pending = await search(stack, status="pending", channel_status="pending", user_id=alice)
        future = await search(stack, since=(datetime.now(UTC) + timedelta(minutes=1)).isoformat())
        since_first = await search(stack, since=made[0]["created_at"], user_id=alice)

    newest_first = [n["id"] for n in reversed(made)]
    assert ids(everyone)[:6] == [other["id"], *newest_first]
    assert ids(first) + ids(second) + ids(third) == newest_first
    assert third["next_cursor"] is None and len(ids(third)) == 1
    assert ids(by_channel) == [other["id"]]
    assert ids(pending) == newest_first
    assert ids(future) == []
    assert ids(since_first) == newest_first


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"channel": "fax"},
        {"channel_status": "lost"},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"cursor": "not-a-cursor"},
        {"cursor": "x" * 513},
        {"since": "2026-12-05T10:00:00"},  # no zone
        {"since": "yesterday"},
        {"since": "0.5"},  # seconds since 1970 are not a time here
        {"since": "0001-01-01T00:00:00+14:00"},  # before year 1 in UTC
        {"user_id": ""},
        {"user_id": "a\x01b"},
        {"user_id": "u" * 256},
    ],
)
async def test_every_bad_parameter_is_422(db_url: str, params: dict[str, str]) -> None:
    async with running_stack(db_url, worker=False) as stack:
        response = await stack.api.get("/v1/notifications", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


async def test_needs_a_producer_key(db_url: str) -> None:
    async with running_stack(db_url, worker=False) as stack:
        anonymous = await stack.api.get("/v1/notifications", headers={"Authorization": ""})
        token = await stack.service.user_token("someone")
        as_user = await stack.api.get(
            "/v1/notifications", headers={"Authorization": f"Bearer {token}"}
        )
    assert anonymous.status_code == 401
    assert as_user.status_code == 403
