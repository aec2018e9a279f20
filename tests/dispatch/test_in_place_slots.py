"""Sends made in place take no send slot (``workers/dispatcher.py``): ``WORKER_CONCURRENCY``
bounds the notifications whose sends await I/O, and only those.

With two slots and both taken by emails whose relay never answers, a backlog of websocket
notifications (sent in place) is still claimed and sent, while the claim leaves the other
emails alone: it takes no email it has no slot for, so none waits here on a lease.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer

SLOTS = 2


def _settings(smtp_peer: DispatchSmtpPeer) -> dict[str, Any]:
    smtp_peer.accept_budget = 0  # no DATA is ever answered: each email holds its slot
    return {
        **smtp_peer.settings(),
        "smtp_timeout_seconds": 60.0,
        "websocket_grace_seconds": 0,  # the worker sends the websocket channel, not the API
    }


async def _notify(stack: Any, user: str, channel: str, count: int) -> list[dict[str, Any]]:
    created: list[dict[str, Any]] = await stack.notify_batch(
        [
            {"user_id": user, "title": f"{channel}{i}", "message": "m", "channels": [channel]}
            for i in range(count)
        ]
    )
    return created


async def _websockets_sent_and_slots_still_held(
    stack: Any,
    smtp_peer: DispatchSmtpPeer,
    frames: list[dict[str, Any]],
    emails: list[dict[str, Any]],
) -> None:
    for created in frames:
        sent = await stack.wait_channel(created["id"], "websocket", "sent")
        assert sent["delivery_status"]["websocket"]["status"] == "sent", sent
    # The slots still taken: no third email went out, and none was claimed to wait.
    assert len(smtp_peer.arrivals) == SLOTS
    # Claimed (``dispatching``): the two being sent; the others wait in the queue.
    states = sorted([(await stack.get(e["id"]))["status"] for e in emails])
    assert states == ["dispatching"] * SLOTS + ["pending"] * 3, states


async def test_websocket_sends_are_not_held_up_by_awaiting_sends_that_fill_the_slots(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with running_stack(db_url, worker=False, **_settings(smtp_peer)) as stack:
        await stack.put_recipient(user, email="slots@example.com")
        emails = await _notify(stack, user, "email", 5)
        frames = await _notify(stack, user, "websocket", 10)
        async with stack.worker(worker_concurrency=SLOTS, worker_batch_size=20) as dispatcher:
            dispatcher.drain_seconds = 1.0  # the stop waits this long for the stalled sends
            await smtp_peer.wait_until(lambda: len(smtp_peer.arrivals) >= SLOTS, 10)
            await _websockets_sent_and_slots_still_held(stack, smtp_peer, frames, emails)
    assert smtp_peer.accepted == []


async def test_websocket_sends_after_a_claim_of_emails_only_are_still_claimed(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    """After a claim that found only emails the worker asks for its free slots' worth only
    (``Dispatcher._claim_some``); a websocket backlog arriving next must still be claimed in
    full, and no email beyond the slots."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with running_stack(db_url, worker=False, **_settings(smtp_peer)) as stack:
        await stack.put_recipient(user, email="slots@example.com")
        async with stack.worker(worker_concurrency=SLOTS, worker_batch_size=20) as dispatcher:
            dispatcher.drain_seconds = 1.0
            emails = await _notify(stack, user, "email", 5)
            await smtp_peer.wait_until(lambda: len(smtp_peer.arrivals) >= SLOTS, 10)
            frames = await _notify(stack, user, "websocket", 10)
            await _websockets_sent_and_slots_still_held(stack, smtp_peer, frames, emails)
    assert smtp_peer.accepted == []
