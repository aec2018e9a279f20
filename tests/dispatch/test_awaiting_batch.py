"""A claimed batch's emails are sent from the batch's task and recorded in groups as they finish
(``workers/awaiting.py``): one stalled send holds up neither the records of the others nor the
stop, which hands its row back unrecorded while the others stay ``delivered``."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer


async def statuses(stack: Stack, ids: list[str]) -> list[str]:
    return sorted([(await stack.get(i))["delivery_status"]["email"]["status"] for i in ids])


async def test_a_stalled_email_holds_up_neither_its_batch_records_nor_the_stop(
    fresh_pg_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    smtp_peer.accept_budget = 3  # the fourth DATA is never answered
    settings = {**smtp_peer.settings(), "smtp_timeout_seconds": 60.0}
    async with running_stack(fresh_pg_url, worker=False, **settings) as stack:
        await stack.put_recipient(user, email="batch@example.com")
        created = await stack.notify_batch(
            [
                {"user_id": user, "title": f"t{i}", "message": "m", "channels": ["email"]}
                for i in range(4)
            ]
        )
        ids = [c["id"] for c in created]
        # One claim takes all four: one batch, one task.
        async with stack.worker(worker_batch_size=4) as dispatcher:
            dispatcher.drain_seconds = 1.0  # the stop waits this long for the stalled send
            await smtp_peer.wait_until(lambda: len(smtp_peer.arrivals) >= 4, 10)
            # Recorded while the fourth send is still out, not once the whole batch is done.
            deadline = time.monotonic() + 10
            while (now := await statuses(stack, ids)) != ["delivered"] * 3 + ["pending"]:
                assert time.monotonic() < deadline, now
                await asyncio.sleep(0.05)
        # Stopped with the fourth send still out: its row goes back, not recorded.
        assert await statuses(stack, ids) == ["delivered"] * 3 + ["pending"]
        rows = await stack.sql(
            "SELECT lease_owner FROM notifications WHERE id = ANY(:ids)",
            ids=[uuid.UUID(i) for i in ids],
        )
        assert [row.lease_owner for row in rows] == [None] * 4  # handed back on stop
    assert len(smtp_peer.accepted) == 3
