"""Two dispatchers on one PostgreSQL database share a backlog without sending anything twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer

COUNT = 1000
Row = tuple[str, str, str, int]
EXPECTED = {("delivered", "email", "delivered", 1), ("delivered", "websocket", "sent", 1)}


async def test_two_dispatchers_deliver_each_email_once(
    fresh_pg_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    users = [f"bulk-{uuid.uuid4().hex[:6]}-{i}" for i in range(20)]
    async with running_stack(
        fresh_pg_url,
        worker=False,
        worker_batch_size=25,
        lease_seconds=15,
        **smtp_peer.settings(),
    ) as stack:
        for user in users:
            await stack.put_recipient(user, email=f"{user}@example.com")
        one, two = await stack.start_worker(), await stack.start_worker()
        created = await stack.notify_batch(
            [
                {
                    "user_id": users[i % len(users)],
                    "title": f"bulk {i}",
                    "message": "m",
                    "channels": ["email", "websocket"],
                }
                for i in range(COUNT)
            ]
        )
        await smtp_peer.wait_for_messages(COUNT, timeout=240)
        states = await wait_all_settled(stack, COUNT, within=30)

    ids = Counter(str(m.message["Message-ID"]) for m in smtp_peer.messages)
    expected = {f"<{n['id']}@notifier.test>" for n in created}
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
    assert set(ids) == expected
    assert len(smtp_peer.messages) == COUNT
    assert states == EXPECTED
    # Both workers took part.
    assert one.worker_id != two.worker_id


async def wait_all_settled(stack: Stack, count: int, within: float) -> set[Row]:
    """Poll the database until every notification is settled; then what the rows say."""
    query = (
        "SELECT n.status, d.channel, d.status, d.attempts, count(*) FROM notifications n "
        "JOIN notification_deliveries d ON d.notification_id = n.id "
        "GROUP BY n.status, d.channel, d.status, d.attempts"
    )
    deadline = time.monotonic() + within
    while True:
        rows = await stack.sql(query)
        states = {(r[0], r[1], r[2], r[3]) for r in rows}
        if all(r[0] == "delivered" for r in rows) and sum(r[4] for r in rows) == 2 * count:
            return states  # every notification settled; the caller checks how
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.2)  # polling the database: there is no event to await
