"""The inbox's ``unread_count`` comes from a per-user counter that the triggers of migration 0003
keep (``user_unread_counts``). Through the API, on the service of each database: the count
seen after each kind of write the service makes, and the counter against a direct COUNT(*)
after a mixed sequence. Straight SQL and the migration: test_unread_counter_migration.py;
which triggers each statement calls (PostgreSQL): test_unread_counter_triggers.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from notifier.models import UserUnreadCount
from tests.api.helpers import new_user, notification_body
from tests.api.unread_counts import enqueue, service_drift, unread
from tests.support.service import RunningService


async def test_single_and_batch_enqueues_are_counted(service: RunningService) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    async with service.client() as client:
        assert await unread(client, alice) == 0  # no counter row at all yet
        await enqueue(client, alice)
        assert await unread(client, alice) == 1
        batch = [notification_body(u) for u in (alice, bob, alice, carol, bob, alice)]
        response = await client.post("/v1/notifications/batch", json={"notifications": batch})
        assert response.status_code == 202, response.text
        counts = {u: await unread(client, u) for u in (alice, bob, carol)}
    assert counts == {alice: 4, bob: 2, carol: 1}
    assert await service_drift(service, [alice, bob, carol]) == {}


async def test_mark_read_and_read_all(service: RunningService) -> None:
    user, bystander = new_user(), new_user()
    async with service.client() as client:
        created = [await enqueue(client, user) for _ in range(4)]
        await enqueue(client, bystander)
        path = f"/v1/users/{user}/notifications/{created[0]['id']}/read"
        assert (await client.post(path)).status_code == 200
        assert await unread(client, user) == 3
        assert (await client.post(path)).status_code == 200  # read twice: counted once
        assert await unread(client, user) == 3
        read_all = await client.post(f"/v1/users/{user}/notifications/read-all")
        assert read_all.status_code == 200, read_all.text
        assert read_all.json() == {"updated": 3, "unread_count": 0}
        assert await unread(client, user) == 0
        assert await unread(client, bystander) == 1
        await enqueue(client, user)  # counting starts again from zero
        assert await unread(client, user) == 1
    assert await service_drift(service, [user, bystander]) == {}


async def test_cancelled_notifications_are_not_counted(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        # Not websocket: the fast path sends it at enqueue, leaving nothing to cancel.
        first = await enqueue(client, user, channels=["email"])
        await enqueue(client, user)
        cancelled = await client.post(f"/v1/notifications/{first['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert await unread(client, user) == 1
        # Reading a cancelled notification changes nothing it was counted in.
        read = await client.post(f"/v1/users/{user}/notifications/{first['id']}/read")
        assert read.status_code == 200, read.text
        assert await unread(client, user) == 1
    assert await service_drift(service, [user]) == {}


async def test_a_scheduled_notification_counts_once_due(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        await enqueue(client, user)
        # Far ahead, then cancelled or read: never counted, now or later.
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        cancel_me, read_me = (
            await enqueue(client, user, send_at=later),
            await enqueue(client, user, send_at=later),
        )
        assert (await client.post(f"/v1/notifications/{cancel_me['id']}/cancel")).is_success
        read = await client.post(f"/v1/users/{user}/notifications/{read_me['id']}/read")
        assert read.status_code == 200, read.text
        await enqueue(client, user, send_at=later)  # stays scheduled throughout
        due_at = datetime.now(UTC) + timedelta(seconds=2)
        await enqueue(client, user, send_at=due_at.isoformat())
        assert await unread(client, user) == 1
        deadline = time.monotonic() + 30
        while (count := await unread(client, user)) == 1:
            assert time.monotonic() < deadline, "the scheduled notification never became due"
            await asyncio.sleep(0.1)  # polling the public API while time passes: no event to await
        seen_at = datetime.now(UTC)
    assert count == 2
    assert seen_at >= due_at, "counted before its send_at"
    assert await service_drift(service, [user]) == {}  # the counter counts scheduled rows too


async def test_concurrent_enqueues_for_one_user(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/notifications", json=notification_body(user, title=f"n{i}"))
                for i in range(50)
            )
        )
        assert [r.status_code for r in responses] == [202] * 50, [r.text for r in responses]
        assert await unread(client, user) == 50
    assert await service_drift(service, [user]) == {}


async def test_concurrent_batches_over_the_same_users(service: RunningService) -> None:
    # With an Idempotency-Key each batch is a transaction of its own, not grouped: 20 at once,
    # each naming the same users in another order, must neither deadlock nor lose a count.
    users = [new_user() for _ in range(4)]

    def batch(i: int) -> dict[str, Any]:
        order = users[i % 4 :] + users[: i % 4]
        order = order if i % 2 else order[::-1]
        return {"notifications": [notification_body(u, title=f"b{i}") for u in order]}

    async with service.client() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/notifications/batch",
                    json=batch(i),
                    headers={"Idempotency-Key": f"unread-{uuid.uuid4().hex}"},
                )
                for i in range(20)
            )
        )
        assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses]
        counts = [await unread(client, u) for u in users]
    assert counts == [20] * 4
    assert await service_drift(service, users) == {}


async def test_the_counter_equals_a_count_after_mixed_writes(service: RunningService) -> None:
    users = [new_user() for _ in range(3)]
    a, b, c = users
    async with service.client() as client:
        # email: a websocket channel is sent at enqueue (the fast path), so nothing to cancel
        batch = [notification_body(u, channels=["email"]) for u in (a, b, c, a, b, a)]
        created = (
            await client.post("/v1/notifications/batch", json={"notifications": batch})
        ).json()["notifications"]
        for u in users:
            await enqueue(client, u)
        by_user: dict[str, list[str]] = {}
        for row in created:
            by_user.setdefault(row["user_id"], []).append(row["id"])
        await client.post(f"/v1/users/{a}/notifications/{by_user[a][0]}/read")
        await client.post(f"/v1/notifications/{by_user[a][1]}/cancel")
        await client.post(f"/v1/notifications/{by_user[b][0]}/cancel")
        await client.post(f"/v1/users/{b}/notifications/{by_user[b][0]}/read")
        await client.post(f"/v1/users/{c}/notifications/read-all")
        await enqueue(client, c, send_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
        seen = {u: await unread(client, u) for u in users}
    assert seen == {a: 2, b: 2, c: 0}
    assert await service_drift(service, users) == {}
    counters = select(UserUnreadCount.user_id, UserUnreadCount.unread).where(
        UserUnreadCount.user_id.in_(users)
    )
    async with service.context.engine.connect() as connection:
        kept = {u: int(n) for u, n in await connection.execute(counters)}
    assert kept == {a: 2, b: 2, c: 1}  # c's scheduled row is in the counter, not in the inbox
