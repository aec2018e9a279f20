"""The receiving side of each fan-out broker keeps one user's frames in publish order when some
travel by reference: a frame that must be read back from the database holds the user's later
frames until it is out, and a read that fails does not hold them for ever. Both brokers, real:
PostgreSQL NOTIFY (``PostgresFanout``) and the NATS server (``NatsFanout``); the hub's sockets are
recording sinks, and the frame loader is a stand-in so that the test decides when a read-back
finishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from notifier.realtime.fanout import MAX_NOTIFY_PAYLOAD, Fanout, PostgresFanout
from notifier.realtime.frames import FrameReference, reference_to
from notifier.realtime.hub import ConnectionHub
from notifier.realtime.nats_broker import INLINE_LIMIT, NatsFanout
from notifier.storage.db import create_engine
from tests.support.nats import require_nats

pytestmark = pytest.mark.postgres


class RecordingSink:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.changed = asyncio.Event()

    async def send_text(self, data: str) -> None:
        self.texts.append(data)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.texts) < count:
                self.changed.clear()
                await self.changed.wait()


class GatedLoader:
    """Rebuilds a task frame from its reference once ``gate`` opens; fails for task "broken"."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.asked: list[FrameReference] = []

    async def __call__(self, user_id: str, reference: FrameReference) -> dict[str, Any] | None:
        self.asked.append(reference)
        await self.gate.wait()
        if reference.key == "broken":
            raise ConnectionError("database went away")
        return {"type": "task_progress", "task": {"task_id": reference.key, "step": "loaded"}}


def task_frame(task_id: str, step: str, *, padding: int = 0) -> dict[str, Any]:
    task = {"task_id": task_id, "step": step, "updated_at": "2024-01-01T00:00:00+00:00"}
    return {"type": "task_progress", "task": {**task, "task_metadata": {"pad": "x" * padding}}}


Wired = tuple[Fanout, ConnectionHub, GatedLoader, int]


@pytest.fixture(params=["notify", "nats"])
async def wired(request: pytest.FixtureRequest, pg_url: str) -> AsyncIterator[Wired]:
    """A publisher and another process's listener (its own connection) on one broker, and the
    padding that makes a frame travel by reference on it."""
    hub, loader = ConnectionHub(), GatedLoader()
    engine = create_engine(pg_url, pool_size=2)
    publisher: Fanout
    if request.param == "notify":
        receiver: Fanout = PostgresFanout(engine)
        publisher, big = PostgresFanout(engine), MAX_NOTIFY_PAYLOAD
    else:
        url = await require_nats()
        receiver = NatsFanout(url, database_url=pg_url)
        publisher, big = NatsFanout(url, database_url=pg_url), INLINE_LIMIT
    listener = receiver.listener(hub, loader)
    assert listener is not None
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        yield publisher, hub, loader, big
    finally:
        await listener.stop()
        await publisher.aclose()
        await receiver.aclose()
        await engine.dispose()


async def test_frames_read_back_keep_the_users_order(
    wired: Wired,
) -> None:
    fanout, hub, loader, big = wired
    mine, other = RecordingSink(), RecordingSink()
    hub.add("u", mine)
    hub.add("v", other)

    await fanout.publish("u", task_frame("big", "1", padding=big))
    await fanout.publish("u", task_frame("small", "2"))
    await fanout.publish("u", task_frame("small", "3"))
    await fanout.publish("v", task_frame("other", "1"))
    # Messages from one connection arrive in order (NOTIFY and NATS alike): once v's frame is
    # out, u's three were received too; the two small ones wait for the big one, and nobody
    # else waits.
    await other.wait_for(1)
    assert mine.texts == []
    assert [r.key for r in loader.asked] == ["big"]

    loader.gate.set()
    await mine.wait_for(3)
    steps = [t.split('"step":"')[1].split('"')[0] for t in mine.texts]
    assert steps == ["loaded", "2", "3"]


async def test_a_failed_read_back_does_not_hold_up_later_frames(
    wired: Wired,
) -> None:
    fanout, hub, loader, big = wired
    mine = RecordingSink()
    hub.add("u", mine)
    await fanout.publish("u", task_frame("broken", "1", padding=big))
    await fanout.publish("u", task_frame("small", "2"))
    loader.gate.set()
    await mine.wait_for(1)
    assert '"step":"2"' in mine.texts[0]


def test_a_reference_tells_a_later_version_of_its_task() -> None:
    frame = task_frame("t", "1")
    reference = reference_to(frame)
    assert reference == FrameReference("task", "t", "2024-01-01T00:00:00+00:00")
    assert not reference.superseded_by(frame["task"])
    assert reference.superseded_by({**frame["task"], "updated_at": "2024-01-01T00:00:01+00:00"})
    assert FrameReference.from_message(reference.to_message("u")) == reference
    notification = reference_to({"type": "notification", "notification": {"id": "n-1"}})
    assert notification is not None
    assert FrameReference.from_message(notification.to_message("u")) == notification
