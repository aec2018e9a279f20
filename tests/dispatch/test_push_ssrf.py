"""The push endpoint policy holds at send time, not only when a subscription is stored: a
subscription that was accepted while private endpoints were allowed is refused by a worker that
does not allow them, without a single connection reaching the address. Neither the refusal nor
the logs above debug say what a host name resolved to."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from tests.dispatch.harness import running_stack
from tests.peers import PushPeer
from tests.peers.push import make_subscription


async def test_private_endpoints_refused_at_send_time(
    db_url: str,
    push_peer: PushPeer,
    push_settings: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="notifier")
    plain = push_peer.subscribe()  # http://127.0.0.1:<port>/push/<id>
    endpoints = {
        "plain": plain.endpoint,
        "loopback": f"https://127.0.0.1:{push_peer.port}/push/{uuid.uuid4().hex}",
        "by-name": f"https://localhost:{push_peer.port}/push/{uuid.uuid4().hex}",
    }
    users = {kind: f"{kind}-{uuid.uuid4().hex[:8]}" for kind in endpoints}
    async with running_stack(db_url, worker=False, **push_settings) as stack:
        created = {}
        for kind, endpoint in endpoints.items():
            subscription = make_subscription(endpoint)
            response = await stack.api.post(
                f"/v1/users/{users[kind]}/push-subscriptions", json=subscription.as_json()
            )
            assert response.status_code == 201  # stored while private endpoints were allowed
            created[kind] = await stack.notify(
                user_id=users[kind], title="t", message="m", channels=["browser"]
            )
        async with stack.worker(push_allow_private_endpoints=False):
            bodies = {kind: await stack.wait_settled(n["id"]) for kind, n in created.items()}
        stored = await stack.sql("SELECT count(*) FROM push_subscriptions")

    reasons = {}
    for kind, body in bodies.items():
        browser = body["delivery_status"]["browser"]
        assert browser["status"] == "failed", kind
        assert browser["attempts"] == 1, kind
        assert body["status"] == "failed", kind
        assert browser["last_error"].startswith("PermanentError: push endpoint refused"), kind
        reasons[kind] = browser["last_error"]
    assert "https" in reasons["plain"]
    not_allowed = "PermanentError: push endpoint refused: push endpoint is not allowed"
    assert reasons["loopback"].startswith(not_allowed)
    assert reasons["by-name"].startswith(not_allowed)
    # What localhost resolves to is nobody's business but the debug log's.
    assert "127.0.0.1" not in reasons["by-name"] and "::1" not in reasons["by-name"]
    revealing = [
        r.getMessage()
        for r in caplog.records
        if r.levelno > logging.DEBUG and "localhost resolves" in r.getMessage()
    ]
    assert revealing == []
    assert any("localhost resolves to non-public" in r.getMessage() for r in caplog.records)
    assert push_peer.connections == 0
    assert push_peer.pushes == []
    assert stored == [(3,)]  # refused by policy; the subscriptions are not "gone"


async def test_the_subscription_route_does_not_say_what_a_name_resolves_to(db_url: str) -> None:
    subscription = make_subscription(f"https://localhost/push/{uuid.uuid4().hex}")
    async with running_stack(db_url, worker=False) as stack:
        response = await stack.api.post(
            "/v1/users/u-ssrf/push-subscriptions", json=subscription.as_json()
        )
        stored = await stack.sql("SELECT count(*) FROM push_subscriptions")
    assert response.status_code == 422, response.text
    assert "push endpoint is not allowed" in response.text
    assert "127.0.0.1" not in response.text and "::1" not in response.text
    assert stored == [(0,)]
