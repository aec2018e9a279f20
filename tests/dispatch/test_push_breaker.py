"""Push services refusing our VAPID credentials (401/403) on many subscriptions: the browser
channel pauses (circuit breaker) with one alert; no subscription is deleted (unlike 404/410,
the subscriptions are fine) and no recipient is marked failed for it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.api.helpers import new_user
from tests.dispatch.harness import Stack, running_stack
from tests.peers import PushPeer, PushReply

FIRST_WAVE = 4  # users whose pushes are refused before the breaker trips
SUBSCRIPTIONS_EACH = 2


async def _users_with_refusing_subscriptions(
    stack: Stack, push_peer: PushPeer, count: int
) -> list[str]:
    users = []
    for u in range(count):
        user = new_user()
        for s in range(SUBSCRIPTIONS_EACH):
            subscription = push_peer.subscribe()
            refusal = 401 if (u + s) % 2 == 0 else 403
            push_peer.reply(subscription.id, PushReply(refusal), always=True)
            response = await stack.api.post(
                f"/v1/users/{user}/push-subscriptions", json=subscription.as_json()
            )
            assert response.status_code == 201, response.text
        users.append(user)
    return users


async def test_push_auth_refusals_pause_the_channel_and_delete_nothing(
    db_url: str,
    push_peer: PushPeer,
    push_settings: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="notifier.worker")
    async with running_stack(db_url, **push_settings) as stack:
        first_users = await _users_with_refusing_subscriptions(stack, push_peer, FIRST_WAVE)
        later_users = await _users_with_refusing_subscriptions(stack, push_peer, 3)

        # A first wave, all at once: every subscription of each user answers 401 or 403.
        first = await stack.notify_batch(
            [
                {"user_id": user, "title": "t", "message": "m", "channels": ["browser"]}
                for user in first_users
            ]
        )
        tripped = [
            await stack.wait_channel(n["id"], "browser", "retrying", within=15) for n in first
        ]
        pushes_when_tripped = len(push_peer.pushes)

        # While paused, queued recipients are not tried against the refused credentials.
        later = []
        for user in later_users:
            created = await stack.notify(user_id=user, title="t", message="m", channels=["browser"])
            later.append(await stack.wait_channel(created["id"], "browser", "retrying", within=15))
        [(subscriptions,)] = await stack.sql("SELECT count(*) FROM push_subscriptions")

    # Every subscription is still there: a refusal of our credentials is not "gone".
    assert subscriptions == (FIRST_WAVE + len(later_users)) * SUBSCRIPTIONS_EACH
    # The peer saw only the first wave's pushes, each refused, none accepted.
    assert len(push_peer.pushes) == pushes_when_tripped
    assert 1 <= pushes_when_tripped <= FIRST_WAVE * SUBSCRIPTIONS_EACH
    assert {p.status for p in push_peer.pushes} <= {401, 403}
    for body in tripped:
        browser = body["delivery_status"]["browser"]
        assert browser["status"] == "retrying"  # not failed: the recipient is not at fault
        assert browser["next_attempt_at"] is not None
        # Refused at the peer (401/403), or held back once a concurrent send had tripped it.
        assert "40" in browser["last_error"] or "paused" in browser["last_error"], browser
        assert body["status"] not in ("failed", "partially_failed")
    for body in later:
        held = body["delivery_status"]["browser"]
        assert held["status"] == "retrying"
        assert held["attempts"] == 0 and "paused" in held["last_error"]
        assert held["next_attempt_at"] is not None
    alerts = [r for r in caplog.records if "ALERT channel browser paused" in r.getMessage()]
    assert len(alerts) == 1
