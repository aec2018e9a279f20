"""Sends made in place take no send slot (``workers/dispatcher.py``): ``WORKER_CONCURRENCY``
bounds the notifications whose sends await I/O, and only those.

With two slots and both taken by emails whose relay never answers, a backlog of websocket
notifications (sent in place) is still claimed and sent, while the claim leaves the other
emails alone: it takes no email it has no slot for, so none waits here on a lease.
"""

from __future__ import annotations

import uuid

from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer

SLOTS = 2


async def test_websocket_sends_are_not_held_up_by_awaiting_sends_that_fill_the_slots(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    smtp_peer.accept_budget = 0  # no DATA is ever answered: each email holds its slot
    settings = {
        **smtp_peer.settings(),
        "smtp_timeout_seconds": 60.0,
        "websocket_grace_seconds": 0,  # the worker sends the websocket channel, not the API
    }
    async with running_stack(db_url, worker=False, **settings) as stack:
        await stack.put_recipient(user, email="slots@example.com")
        emails = await stack.notify_batch(
            [
                {"user_id": user, "title": f"e{i}", "message": "m", "channels": ["email"]}
                for i in range(5)
            ]
        )
        frames = await stack.notify_batch(
            [
                {"user_id": user, "title": f"w{i}", "message": "m", "channels": ["websocket"]}
                for i in range(10)
            ]
        )
        async with stack.worker(worker_concurrency=SLOTS, worker_batch_size=20) as dispatcher:
            dispatcher.drain_seconds = 1.0  # the stop waits this long for the stalled sends
            await smtp_peer.wait_until(lambda: len(smtp_peer.arrivals) >= SLOTS, 10)
            for created in frames:
                sent = await stack.wait_channel(created["id"], "websocket", "sent")
                assert sent["delivery_status"]["websocket"]["status"] == "sent", sent
            # The slots still taken: no third email went out, and none was claimed to wait.
            assert len(smtp_peer.arrivals) == SLOTS
            # Claimed (``dispatching``): the two being sent; the others wait in the queue.
            states = sorted([(await stack.get(e["id"]))["status"] for e in emails])
            assert states == ["dispatching"] * SLOTS + ["pending"] * 3, states
    assert smtp_peer.accepted == []


async def test_websocket_sends_after_a_claim_of_emails_only_are_still_claimed(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    """After a claim that found only emails the worker asks for its free slots' worth only
    (``Dispatcher._claim_some``); a websocket backlog arriving next must still be claimed in
    full, and no email beyond the slots."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    smtp_peer.accept_budget = 0  # no DATA is ever answered: each email holds its slot
    settings = {
        **smtp_peer.settings(),
        "smtp_timeout_seconds": 60.0,
        "websocket_grace_seconds": 0,
    }
    async with running_stack(db_url, worker=False, **settings) as stack:
        await stack.put_recipient(user, email="slots@example.com")
        async with stack.worker(worker_concurrency=SLOTS, worker_batch_size=20) as dispatcher:
            dispatcher.drain_seconds = 1.0
            emails = await stack.notify_batch(
                [
                    {"user_id": user, "title": f"e{i}", "message": "m", "channels": ["email"]}
                    for i in range(5)
                ]
            )
            await smtp_peer.wait_until(lambda: len(smtp_peer.arrivals) >= SLOTS, 10)
            frames = await stack.notify_batch(
                [
                    {"user_id": user, "title": f"w{i}", "message": "m", "channels": ["websocket"]}
                    for i in range(10)
                ]
            )
            for created in frames:
                sent = await stack.wait_channel(created["id"], "websocket", "sent")
                assert sent["delivery_status"]["websocket"]["status"] == "sent", sent
            assert len(smtp_peer.arrivals) == SLOTS
            states = sorted([(await stack.get(e["id"]))["status"] for e in emails])
            assert states == ["dispatching"] * SLOTS + ["pending"] * 3, states
    assert smtp_peer.accepted == []
