"""Digest windows under real processes (docs/architecture.md, "Digest, throttle and
escalation"): two ``notifier serve`` processes enqueueing one storm into one digest key while two
``notifier worker`` processes race over it, and a worker SIGKILLed in the middle of a window's
close. The SMTP peer counts what the user receives: exactly ONE digest email, every member
``digested`` once with ``provider_id`` ``digest:<id>``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.faults.peers import TimedSmtpPeer
from tests.faults.processes import ProcessSet, poll_until
from tests.faults.scenario import Producer, RowReader, db_connect, service_env

pytestmark = pytest.mark.postgres

STORM = 200
BATCH = 10  # items per request: the 200 are made well within one window on a loaded machine
WINDOW_SECONDS = 2


def storm(user: str, count: int, first: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "user_id": user,
            "title": f"job {i} failed",
            "message": f"exit code {i}",
            "channels": ["websocket", "email"],
            "digest": {"key": "job-failures", "window_seconds": WINDOW_SECONDS},
        }
        for i in range(first, first + count)
    ]


async def settled_digest(
    rows: RowReader, user: str, members: int, procs: ProcessSet
) -> dict[str, Any]:
    """Wait (bounded) until every member's email is ``digested`` and a digest email went out:
    after that no email of this storm can come any more (every member channel is final)."""

    async def probe() -> tuple[bool, Any]:
        digested = await rows.fetch(
            "SELECT count(*) AS n FROM notification_deliveries d JOIN notifications n "
            "ON n.id = d.notification_id WHERE n.user_id = $1 AND d.channel = 'email' "
            "AND d.status = 'digested'",
            user,
        )
        sent = await rows.fetch(
            "SELECT n.id, d.status FROM notifications n JOIN notification_deliveries d "
            "ON d.notification_id = n.id WHERE n.user_id = $1 AND n.dedupe_key LIKE 'digest:%'",
            user,
        )
        done = digested[0]["n"] == members and [r["status"] for r in sent] == ["delivered"]
        return done, {"digested": digested[0]["n"], "digests": [tuple(r) for r in sent]}

    try:
        await poll_until(probe, timeout=90, interval=0.2, what=f"{members} members digested")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{procs.logs()}") from None
    [row] = await rows.fetch(
        "SELECT id, notification_metadata AS metadata FROM notifications "
        "WHERE user_id = $1 AND dedupe_key LIKE 'digest:%'",
        user,
    )
    return {"id": str(row["id"]), "metadata": row["metadata"]}


async def assert_accounted_once(
    rows: RowReader, smtp: TimedSmtpPeer, digest: dict[str, Any], members: set[str]
) -> None:
    """One digest email at the peer, listing every member once; each member's email
    ``digested`` with the digest's id, never sent on its own."""
    assert smtp.message_ids() == [f"<{digest['id']}@notifier.test>"]
    found = await rows.fetch(
        "SELECT notification_id, status, provider_id, attempts FROM notification_deliveries "
        "WHERE channel = 'email' AND notification_id = ANY($1::uuid[])",
        [uuid.UUID(m) for m in members],
    )
    assert len(found) == len(members)
    for row in found:
        assert (row["status"], row["provider_id"], row["attempts"]) == (
            "digested",
            f"digest:{digest['id']}",
            0,
        ), dict(row)
    metadata = json.loads(digest["metadata"])
    listed = metadata["digest"]["members"]
    assert sorted(listed) == sorted(members)  # every member once, none lost, none twice
    assert metadata["digest"]["count"] == len(members)
    windows = await rows.fetch("SELECT count(*) AS n FROM digest_windows")
    assert windows[0]["n"] == 1


@pytest.fixture
async def deployment(
    fault_db: str, tmp_path: Path
) -> AsyncIterator[tuple[ProcessSet, TimedSmtpPeer, dict[str, str]]]:
    async with TimedSmtpPeer() as smtp, ProcessSet(tmp_path / "logs") as procs:
        env = service_env(fault_db, **smtp.settings(), lease_seconds=2)
        yield procs, smtp, env


async def test_two_apis_one_storm_make_one_digest(
    fault_db: str, deployment: tuple[ProcessSet, TimedSmtpPeer, dict[str, str]]
) -> None:
    procs, smtp, env = deployment
    user = f"u-{uuid.uuid4().hex[:8]}"
    apis = await asyncio.gather(procs.serve(env), procs.serve(env))
    await asyncio.gather(procs.worker(env), procs.worker(env))
    producers = [Producer(api.base_url) for api in apis]
    try:
        await producers[0].put_recipient(user, email=f"{user}@example.com")
        # Both API processes at once, while both workers claim what is already committed.
        chunks = [storm(user, BATCH, first) for first in range(0, STORM, BATCH)]
        made = await asyncio.gather(
            *(producers[i % 2].enqueue_batch(chunk) for i, chunk in enumerate(chunks))
        )
    finally:
        await asyncio.gather(*(p.aclose() for p in producers))
    members = {n["id"] for batch in made for n in batch}
    assert len(members) == STORM
    async with RowReader(fault_db) as rows:
        [span] = await rows.fetch(
            "SELECT max(created_at) - min(created_at) AS span FROM notifications "
            "WHERE user_id = $1",
            user,
        )
        # The premise: one storm within one window (else two digests would be right).
        assert span["span"] < timedelta(seconds=WINDOW_SECONDS), span
        digest = await settled_digest(rows, user, STORM, procs)
        await assert_accounted_once(rows, smtp, digest, members)


async def close_waiting_on_lock(connection: asyncpg.Connection) -> tuple[bool, Any]:
    """A worker's close blocked on the member row this test holds (no event offers itself:
    the wait is inside another process's database session)."""
    waiting = await connection.fetch(
        "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query ILIKE '%FOR UPDATE%'"
    )
    return bool(waiting), [r["query"][:120] for r in waiting]


async def test_worker_killed_in_the_close_leaves_one_digest(
    fault_db: str, deployment: tuple[ProcessSet, TimedSmtpPeer, dict[str, str]]
) -> None:
    """The close is one transaction: SIGKILLed inside it (held at the member rows' lock, after
    the window row was marked closed), everything rolls back; the next worker closes the window
    once. 20 members, one held locked by the test so that no worker reaches it before the
    close and the close waits on it."""
    procs, smtp, env = deployment
    user = f"u-{uuid.uuid4().hex[:8]}"
    api = await procs.serve(env)
    producer = Producer(api.base_url)
    holder = await db_connect(fault_db)
    watcher = await db_connect(fault_db)
    try:
        await producer.put_recipient(user, email=f"{user}@example.com")
        made = await producer.enqueue_batch(storm(user, 20))
        members = {n["id"] for n in made}
        locked = max(members, key=uuid.UUID)  # the close locks in id order: it waits here last
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", uuid.UUID(locked)
        )
        first = await procs.worker(env, name="first")
        await poll_until(
            lambda: close_waiting_on_lock(watcher), timeout=60, what="a close waiting on a lock"
        )
        first.kill()
        assert (
            await watcher.fetchval(
                "SELECT count(*) FROM notifications WHERE dedupe_key LIKE 'digest:%'"
            )
            == 0
        )
        await tx.rollback()  # the dead worker's session ends; its close rolls back
        await procs.worker(env, name="second")
        async with RowReader(fault_db) as rows:
            digest = await settled_digest(rows, user, 20, procs)
            await assert_accounted_once(rows, smtp, digest, members)
    finally:
        await producer.aclose()
        await holder.close()
        await watcher.close()
