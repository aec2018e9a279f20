"""Fault case 2 through a real `notifier worker` process and a local Web Push service:

- 201: the push arrives with TTL, Urgency, aes128gcm and a VAPID JWT whose ``aud`` is the
  endpoint's origin and ``exp`` at most 24 h ahead (the peer checks and decrypts);
- 404 and 410 → that subscription deleted, the channel failed;
- 503, and a connection reset, then 201 → sent on the second try;
- 429 with Retry-After 120 → retrying, the next attempt not before 120 s later;
- 403 → the channel pauses with an alert (metric), nothing deleted, nobody failed;
- with PUSH_ALLOW_PRIVATE_ENDPOINTS left at its default, endpoints on loopback, link-local,
  private or shared addresses (or a name resolving to loopback) → no connection, failed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.vapid import generate_private_key
from tests.faults.processes import ProcessSet
from tests.faults.scenario import VAPID_SUBJECT, Producer, RowReader, local_api, service_env
from tests.peers import BrowserSubscription, PushPeer, PushReply

pytestmark = pytest.mark.postgres

TTL = 900


async def _push_to(
    producer: Producer, push: PushPeer, *replies: PushReply, priority: str = "normal"
) -> tuple[str, BrowserSubscription]:
    user = f"push-{uuid.uuid4().hex[:8]}"
    subscription = push.subscribe()
    if replies:
        push.reply(subscription.id, *replies)
    await producer.subscribe_push(user, subscription.as_json())
    created = await producer.enqueue(
        {
            "user_id": user,
            "title": "Pushed",
            "message": "m",
            "channels": ["browser"],
            "priority": priority,
        }
    )
    return str(created["id"]), subscription


def _settled(state: dict[str, Any]) -> bool:
    return state["lease_owner"] is None and state["channels"]["browser"]["status"] in (
        "sent",
        "failed",
        "retrying",
    )


async def test_push_faults_at_a_worker_process(fault_db: str, tmp_path: Path) -> None:
    settings = {
        "vapid_private_key": generate_private_key(),
        "vapid_subject": VAPID_SUBJECT,
        "push_allow_private_endpoints": True,
        "push_ttl_seconds": TTL,
    }
    async with (
        PushPeer() as push,
        ProcessSet(tmp_path / "logs") as procs,
        local_api(fault_db, **settings) as producer,
        RowReader(fault_db) as rows,
    ):
        worker = await procs.worker(service_env(fault_db, **settings))
        ok, ok_sub = await _push_to(producer, push, priority="high")
        gone, gone_sub = await _push_to(producer, push, PushReply(410))
        missing, missing_sub = await _push_to(producer, push, PushReply(404))
        busy, busy_sub = await _push_to(producer, push, PushReply(503))
        reset, reset_sub = await _push_to(producer, push, PushReply(reset=True))
        throttled, throttled_sub = await _push_to(producer, push, PushReply(429, retry_after="120"))
        ids = [ok, gone, missing, busy, reset, throttled]
        states = {
            nid: await rows.wait(nid, _settled, what=f"{nid} settled", logs=procs.logs)
            for nid in ids
        }
        subscriptions_left = {
            str(r["endpoint"]) for r in await rows.fetch("SELECT endpoint FROM push_subscriptions")
        }

        # Last, since it pauses the channel for this worker: our VAPID credentials refused.
        refused, refused_sub = await _push_to(producer, push, PushReply(403))
        paused = await rows.wait(refused, _settled, what="paused", logs=procs.logs)
        still_subscribed = await rows.fetch(
            "SELECT count(*) AS n FROM push_subscriptions WHERE endpoint = $1",
            refused_sub.endpoint,
        )
        async with httpx.AsyncClient(timeout=10) as client:
            metrics = (await client.get(f"{worker.base_url}/metrics")).text
        log = worker.log_path.read_text(errors="replace")

    def browser(nid: str) -> dict[str, Any]:
        return dict(states[nid]["channels"]["browser"])

    # 201: everything a push service checks, checked at the peer.
    [delivered] = push.pushes_for(ok_sub.id)
    assert delivered.status == 201 and delivered.vapid_error is None, delivered.vapid_error
    assert delivered.json()["id"] == ok
    assert (delivered.ttl, delivered.urgency) == (str(TTL), "high")
    assert delivered.content_encoding == "aes128gcm"
    assert delivered.vapid_claims is not None
    assert delivered.vapid_claims["aud"] == push.origin
    assert delivered.vapid_claims["exp"] <= delivered.at + 24 * 3600
    assert (browser(ok)["status"], browser(ok)["attempts"]) == ("sent", 1)

    # 404/410: those subscriptions deleted, every other one kept.
    for nid, sub in ((gone, gone_sub), (missing, missing_sub)):
        assert (browser(nid)["status"], browser(nid)["attempts"]) == ("failed", 1), states[nid]
        assert len(push.pushes_for(sub.id)) == 1
    assert {gone_sub.endpoint, missing_sub.endpoint}.isdisjoint(subscriptions_left)
    kept = {s.endpoint for s in (ok_sub, busy_sub, reset_sub, throttled_sub)}
    assert kept <= subscriptions_left

    # 503 and a reset: transient, sent on the second try.
    for nid, sub in ((busy, busy_sub), (reset, reset_sub)):
        assert (browser(nid)["status"], browser(nid)["attempts"]) == ("sent", 2), states[nid]
        assert len(push.pushes_for(sub.id)) == 2
        assert states[nid]["retry_count"] == 1

    # 429 Retry-After 120: the next attempt is not due before then.
    [asked] = push.pushes_for(throttled_sub.id)
    wait = browser(throttled)
    assert (wait["status"], wait["attempts"]) == ("retrying", 1), states[throttled]
    next_at: datetime = wait["next_attempt_at"]
    assert next_at.astimezone(UTC).timestamp() >= asked.at + 120 - 1, (next_at, asked.at)

    # 401/403: paused, not failed, the subscription kept, an alert raised.
    held = paused["channels"]["browser"]
    assert held["status"] == "retrying" and paused["status"] not in ("failed",), paused
    assert "403" in held["last_error"], paused
    assert still_subscribed[0]["n"] == 1
    assert log.count("ALERT channel browser paused") == 1, log
    assert 'notifier_channel_paused_total{channel="browser"} 1.0' in metrics


async def test_private_push_endpoints_refused_by_default(fault_db: str, tmp_path: Path) -> None:
    """A worker started without ``PUSH_ALLOW_PRIVATE_ENDPOINTS`` refuses loopback, link-local,
    private and shared addresses (and a hostname that resolves to loopback): no connection
    reaches the push service listening there, and each channel fails for good."""
    settings = {"vapid_private_key": generate_private_key(), "vapid_subject": VAPID_SUBJECT}
    async with (
        PushPeer() as push,
        ProcessSet(tmp_path / "logs") as procs,
        # The API was told to accept them (as a misconfigured one might); the worker was not.
        local_api(fault_db, push_allow_private_endpoints=True, **settings) as producer,
        RowReader(fault_db) as rows,
    ):
        await procs.worker(service_env(fault_db, **settings))
        hosts = [
            "127.0.0.1",
            "localhost",
            "127.0.0.2",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "169.254.169.254",
            "10.1.2.3",
            "100.64.0.1",
        ]
        ids = {}
        for host in hosts:
            user = f"ssrf-{uuid.uuid4().hex[:8]}"
            subscription = push.subscribe()
            endpoint = subscription.endpoint.replace(push.host, host, 1)
            await producer.subscribe_push(user, {**subscription.as_json(), "endpoint": endpoint})
            created = await producer.enqueue(
                {"user_id": user, "title": "t", "message": "m", "channels": ["browser"]}
            )
            ids[host] = str(created["id"])
        states = {
            host: await rows.wait(nid, _settled, what=f"{host} settled", logs=procs.logs)
            for host, nid in ids.items()
        }

    assert push.connections == 0 and push.pushes == []
    for host, state in states.items():
        browser = state["channels"]["browser"]
        assert (browser["status"], browser["attempts"]) == ("failed", 1), (host, state)
        assert "refused" in browser["last_error"], (host, state)
