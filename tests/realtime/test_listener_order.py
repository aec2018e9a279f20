"""The LISTEN side of the PostgreSQL fan-out keeps one user's frames in publish order when some
travel by reference: a frame that must be read back from the database holds the user's later
frames until it is out, and a read that fails does not hold them for ever. A real PostgreSQL and
real NOTIFYs (``PostgresFanout.publish``); the hub's sockets are recording sinks, and the frame
loader is a stand-in so that the test decides when a read-back finishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from notifier.realtime.fanout import MAX_NOTIFY_PAYLOAD, PostgresFanout, PostgresListener
from notifier.realtime.frames import FrameReference, reference_to
from notifier.realtime.hub import ConnectionHub
from notifier.storage.db import create_engine

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


@pytest.fixture
async def wired(pg_url: str) -> AsyncIterator[tuple[PostgresFanout, ConnectionHub, GatedLoader]]:
    hub, loader = ConnectionHub(), GatedLoader()
    listener = PostgresListener(pg_url, hub, loader)
    listener.start()
    engine = create_engine(pg_url, pool_size=2)
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        yield PostgresFanout(engine), hub, loader
    finally:
        await listener.stop()
        await engine.dispose()


async def test_frames_read_back_keep_the_users_order(
    wired: tuple[PostgresFanout, ConnectionHub, GatedLoader],
) -> None:
    fanout, hub, loader = wired
    mine, other = RecordingSink(), RecordingSink()
    hub.add("u", mine)
    hub.add("v", other)

    await fanout.publish("u", task_frame("big", "1", padding=MAX_NOTIFY_PAYLOAD))
    await fanout.publish("u", task_frame("small", "2"))
    await fanout.publish("u", task_frame("small", "3"))
    await fanout.publish("v", task_frame("other", "1"))
    # NOTIFYs on one connection arrive in order: once v's frame is out, u's three were
    # received too; the two small ones wait for the big one, and nobody else waits.
    await other.wait_for(1)
    assert mine.texts == []
    assert [r.key for r in loader.asked] == ["big"]

    loader.gate.set()
    await mine.wait_for(3)
    steps = [t.split('"step":"')[1].split('"')[0] for t in mine.texts]
    assert steps == ["loaded", "2", "3"]


async def test_a_failed_read_back_does_not_hold_up_later_frames(
    wired: tuple[PostgresFanout, ConnectionHub, GatedLoader],
) -> None:
    fanout, hub, loader = wired
    mine = RecordingSink()
    hub.add("u", mine)
    await fanout.publish("u", task_frame("broken", "1", padding=MAX_NOTIFY_PAYLOAD))
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
