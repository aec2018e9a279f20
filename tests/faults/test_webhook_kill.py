"""A `notifier worker` process SIGKILLed while a webhook request is in flight (the receiver holds
it open): once the lease runs out another worker process sends the event again, under the same
``webhook-id`` — delivery is at least once, and a receiver deduplicates by that id."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.faults.processes import ProcessSet, poll_until
from tests.faults.scenario import RowReader, local_api, service_env
from tests.peers.webhook import WebhookReceiver, WebhookReply

pytestmark = pytest.mark.postgres


async def test_sigkill_mid_delivery_sends_again_under_the_same_id(
    fault_db: str, tmp_path: Path
) -> None:
    held = asyncio.Event()  # never set: the first request stays open until its client dies
    settings = {"webhook_allow_private_endpoints": True}
    async with (
        WebhookReceiver() as receiver,
        ProcessSet(tmp_path / "logs") as procs,
        local_api(fault_db, **settings) as producer,
        RowReader(fault_db) as rows,
    ):
        # A lease of 1 + 3 s (LEASE_SECONDS + WEBHOOK_TIMEOUT_SECONDS): the second worker
        # takes over within seconds of the kill.
        env = service_env(fault_db, lease_seconds=1, webhook_timeout_seconds=3, **settings)
        receiver.script("/hook", WebhookReply(hold=held))
        first = await procs.worker(env, name="first")
        created = await producer.http.post(
            "/v1/webhook-endpoints", json={"url": receiver.url("/hook"), "events": ["*"]}
        )
        assert created.status_code == 201, created.text
        endpoint = created.json()
        queued = await producer.http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
        event_id = queued.json()["event_id"]

        await receiver.wait_until(lambda: receiver.holding == 1, within=30)
        first.kill()
        assert first.process is not None and first.process.returncode == -signal.SIGKILL
        await receiver.wait_until(lambda: receiver.holding == 0, within=10)  # it hung up

        second = await procs.worker(env, name="second")

        async def settled() -> tuple[bool, list[object]]:
            found = await rows.fetch("SELECT status, attempts, lease_owner FROM webhook_deliveries")
            return [tuple(r) for r in found] == [("succeeded", 1, None)], found

        await poll_until(settled, timeout=30, what="the delivery to succeed")
        log = await producer.http.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")
        assert second.running, second.tail()

    # The receiver got the event twice, signed, under one id; the second time it answered.
    assert [r.id for r in receiver.requests] == [event_id, event_id]
    assert receiver.requests[0].body == receiver.requests[1].body
    for request in receiver.requests:
        assert request.verify(endpoint["secret"])["id"] == event_id
    # The killed attempt was never recorded (the process died before it knew the answer).
    assert [(a["attempt"], a["status_code"]) for a in log.json()["items"]] == [(1, 200)]
