"""Deliveries are claimed and recorded in batches: two senders claiming from one queue never
send one delivery twice; in a batch that holds a hanging and a gone endpoint's deliveries,
the others' are delivered and recorded without waiting for them; and a sender left with
nothing to send writes its last outcomes without waiting for the batch to gather."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from notifier.models.webhook import WebhookDeliveryStatus as Status
from notifier.webhooks.events import task_ended
from tests.peers.webhook import WebhookReceiver, WebhookReply
from tests.webhooks.harness import webhook_stack
from workers import webhook_outcomes


async def test_two_senders_never_send_one_delivery_twice(
    db_url: str, receiver: WebhookReceiver
) -> None:
    events = 40  # within the one page of the deliveries log that `attempts` reads (50)
    release = asyncio.Event()
    # The first four requests wait: four at once is more than one sender's bound of two, so
    # both senders are sending when they are let go.
    receiver.script("/hook", *[WebhookReply(hold=release)] * 4)
    bounds = {"webhook_concurrency_per_endpoint": 2, "webhook_worker_concurrency": 2}
    async with webhook_stack(db_url) as hooks, contextlib.AsyncExitStack() as senders:
        endpoint = await hooks.create_endpoint(receiver.url())
        first = await senders.enter_async_context(hooks.sender(**bounds))
        second = await senders.enter_async_context(hooks.sender(**bounds))
        await hooks.emit(*[task_ended("completed", {"task_id": f"t{n}"}) for n in range(events)])
        await receiver.wait_until(lambda: receiver.holding == 4)
        release.set()
        await receiver.wait_for(events)
        attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) >= events)
        rows = await hooks.delivery_rows(endpoint["id"])
        sent_by = [sender.outcomes.batches_written for sender in (first, second)]

    ids = [request.id for request in receiver.requests]
    assert len(ids) == len(set(ids)) == events  # each exactly once, none in two places at once
    assert len(attempts) == events and all(a["status_code"] == 200 for a in attempts)
    assert {(status, n, lease) for status, n, _, lease, _ in rows} == {
        (Status.SUCCEEDED.value, 1, None)
    }
    assert all(written > 0 for written in sent_by)  # both senders recorded outcomes


async def test_a_hanging_or_gone_endpoint_does_not_hold_its_batch(
    db_url: str, receiver: WebhookReceiver
) -> None:
    release = asyncio.Event()
    receiver.script("/hang", *[WebhookReply(hold=release)] * 3)
    receiver.script("/gone", *[WebhookReply(410)] * 3)
    async with webhook_stack(db_url) as hooks, hooks.sender(webhook_concurrency_per_endpoint=3):
        hang = await hooks.create_endpoint(receiver.url("/hang"))
        gone = await hooks.create_endpoint(receiver.url("/gone"))
        fine = await hooks.create_endpoint(receiver.url("/fine"))
        # One transaction: three deliveries to each endpoint, claimed together.
        await hooks.emit(*[task_ended("completed", {"task_id": f"t{n}"}) for n in range(3)])
        await receiver.wait_until(lambda: receiver.holding == 3)
        fine_attempts = await hooks.wait_attempts(fine["id"], lambda a: len(a) == 3)
        fine_rows = await hooks.delivery_rows(fine["id"])
        gone_attempts = await hooks.wait_attempts(gone["id"], lambda a: len(a) >= 1)
        gone_endpoint = await hooks.endpoint(gone["id"])
        hanging_meanwhile = (receiver.holding, await hooks.attempts(hang["id"]))
        release.set()
        hang_attempts = await hooks.wait_attempts(hang["id"], lambda a: len(a) == 3)

    assert hanging_meanwhile == (3, [])  # still waiting on its receiver, nothing recorded
    assert [a["status_code"] for a in fine_attempts] == [200] * 3
    assert {(row[0], row[1]) for row in fine_rows} == {(Status.SUCCEEDED.value, 1)}
    assert gone_attempts[0]["status_code"] == 410 and gone_endpoint["enabled"] is False
    assert [a["status_code"] for a in hang_attempts] == [200] * 3


async def test_the_last_outcome_is_written_without_waiting_for_company(
    db_url: str, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With batches gathering for a whole minute, a lone event's attempt is in the deliveries
    log at once: the sender, holding nothing more, hurries the writer (``Coalescer.hurry``).
    Without the hurry this test waits out the minute and fails."""
    monkeypatch.setattr(webhook_outcomes, "GATHER_SECONDS", 60.0)
    async with webhook_stack(db_url) as hooks, hooks.sender():
        endpoint = await hooks.create_endpoint(receiver.url())
        await hooks.emit(task_ended("completed", {"task_id": "alone"}))
        await receiver.wait_for(1)
        attempts = await hooks.wait_attempts(endpoint["id"], lambda a: len(a) == 1, within=10)
        rows = await hooks.delivery_rows(endpoint["id"])
    assert attempts[0]["status_code"] == 200
    assert [(status, n, lease) for status, n, _, lease, _ in rows] == [(Status.SUCCEEDED, 1, None)]
