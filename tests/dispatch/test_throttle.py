"""Throttle end to end (docs/architecture.md, "Digest, throttle and escalation"): past the
limit a notification's email is ``skipped`` ``"throttled"``; two real workers racing over one
key send exactly ``limit`` to the real SMTP peer; the window slides."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


async def throttled(stack: Stack, user: str, n: int, **throttle: Any) -> list[dict[str, Any]]:
    items = [
        {
            "user_id": user,
            "title": f"alert {i}",
            "message": "disk full",
            "channels": ["websocket", "email"],
            "throttle": {"key": "disk", **throttle},
        }
        for i in range(n)
    ]
    return await stack.notify_batch(items)


async def test_two_workers_send_exactly_the_limit(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings(), worker=False) as stack:
        await stack.put_recipient(user, email=f"{user}@example.com")
        created = await throttled(stack, user, 12, limit=3, window_seconds=60)
        await stack.start_worker()
        await stack.start_worker()
        bodies = [await stack.wait_settled(n["id"]) for n in created]
        slots = await stack.sql("SELECT slot FROM throttle_slots ORDER BY slot")

    emails = [b["delivery_status"]["email"] for b in bodies]
    assert sum(e["status"] == "delivered" for e in emails) == 3
    assert sorted(e["last_error"] for e in emails if e["status"] == "skipped") == ["throttled"] * 9
    assert len(smtp_peer.accepted) == 3 and len(smtp_peer.received_ids()) == 3
    # The websocket is never throttled.
    assert {b["delivery_status"]["websocket"]["status"] for b in bodies} == {"sent"}
    assert [row.slot for row in slots] == [0, 1, 2]  # the limit's slots, no more


async def test_window_slides(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email=f"{user}@example.com")
        first = await throttled(stack, user, 2, limit=1, window_seconds=1)
        settled = [await stack.wait_settled(n["id"]) for n in first]
        # The scenario: the one send of the window ages out after 1 s.
        await asyncio.sleep(1.1)
        [later] = await throttled(stack, user, 1, limit=1, window_seconds=1)
        after = await stack.wait_settled(later["id"])

    statuses = sorted(b["delivery_status"]["email"]["status"] for b in settled)
    assert statuses == ["delivered", "skipped"]
    assert after["delivery_status"]["email"]["status"] == "delivered"
    assert len(smtp_peer.accepted) == 2


async def test_a_notification_that_would_send_nothing_takes_no_slot(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    """Its email dropped for the recipient (no address, then opted out): it does not use up
    the window, and the first one that can go out still gets the one slot."""
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user)  # no email address yet
        [no_address] = await throttled(stack, user, 1, limit=1, window_seconds=600)
        no_address = await stack.wait_settled(no_address["id"])
        await stack.put_recipient(
            user, email=f"{user}@example.com", preferences={"channels": {"email": False}}
        )
        [opted_out] = await throttled(stack, user, 1, limit=1, window_seconds=600)
        opted_out = await stack.wait_settled(opted_out["id"])
        await stack.put_recipient(user, email=f"{user}@example.com")
        sent, over = await throttled(stack, user, 2, limit=1, window_seconds=600)
        sent = await stack.wait_settled(sent["id"])
        over = await stack.wait_settled(over["id"])

    assert no_address["delivery_status"]["email"]["last_error"] == "no email address"
    assert opted_out["delivery_status"]["email"]["last_error"] == "recipient opted out of email"
    emails = sorted(
        (b["delivery_status"]["email"]["status"], b["delivery_status"]["email"]["last_error"])
        for b in (sent, over)
    )
    assert emails == [("delivered", None), ("skipped", "throttled")]
    assert len(smtp_peer.accepted) == 1
