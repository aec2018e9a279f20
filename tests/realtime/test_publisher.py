"""The batched NOTIFY of ``PostgresFanout.publish`` against a real PostgreSQL and a real LISTEN
connection: every frame of a burst arrives, in fewer statements than frames; a dead pooled
connection is replaced; an unreachable database fails the callers after the retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from notifier.realtime.fanout import REALTIME_CHANNEL, PostgresFanout, asyncpg_dsn
from notifier.realtime.publisher import NotifyBatcher
from notifier.storage.db import create_engine

pytestmark = pytest.mark.postgres


class Listener:
    """A LISTEN connection that counts the frames it has seen per user."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._wanted = 0
        self._enough = asyncio.Event()

    def on_notify(self, _c: object, _pid: int, _channel: str, payload: str) -> None:
        self.messages.append(json.loads(payload))
        if len(self.messages) >= self._wanted:
            self._enough.set()

    async def wait_for(self, count: int) -> None:
        self._wanted = count
        if len(self.messages) < count:
            self._enough.clear()
            await asyncio.wait_for(self._enough.wait(), timeout=30)


@pytest.fixture
async def listener(pg_url: str) -> AsyncIterator[Listener]:
    connection = await asyncpg.connect(asyncpg_dsn(pg_url))
    listening = Listener()
    await connection.add_listener(REALTIME_CHANNEL, listening.on_notify)
    try:
        yield listening
    finally:
        await connection.close()


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


def frame(index: int) -> dict[str, Any]:
    return {"type": "notification", "notification": {"id": f"n-{index}", "title": "t"}}


async def test_a_burst_of_publishes_arrives_whole_in_few_statements(
    engine: AsyncEngine, listener: Listener
) -> None:
    fanout = PostgresFanout(engine)
    count = 400
    await asyncio.gather(*(fanout.publish(f"user-{i % 7}", frame(i)) for i in range(count)))
    await listener.wait_for(count)
    assert sorted(m["frame"]["notification"]["id"] for m in listener.messages) == sorted(
        f"n-{i}" for i in range(count)
    )
    # One user's frames keep the order they were published in.
    of_user_3 = [
        m["frame"]["notification"]["id"] for m in listener.messages if m["user_id"] == "user-3"
    ]
    assert of_user_3 == [f"n-{i}" for i in range(count) if i % 7 == 3]
    assert fanout._batcher.batches_sent < count // 10


async def test_a_lone_publish_is_sent_before_it_returns(
    engine: AsyncEngine, listener: Listener
) -> None:
    fanout = PostgresFanout(engine)
    for index in range(3):
        await fanout.publish("solo", frame(index))
        await listener.wait_for(index + 1)
    assert fanout._batcher.batches_sent == 3


async def test_a_too_large_frame_travels_as_its_id(engine: AsyncEngine, listener: Listener) -> None:
    fanout = PostgresFanout(engine)
    big = {"type": "notification", "notification": {"id": "n-big", "message": "x" * 10_000}}
    await fanout.publish("someone", big)
    await listener.wait_for(1)
    assert listener.messages == [{"user_id": "someone", "notification_id": "n-big"}]


async def test_a_terminated_connection_is_replaced(pg_url: str, listener: Listener) -> None:
    # Without the pool's pre-ping, the publisher itself meets the dead connection.
    engine = create_async_engine(pg_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    try:
        batcher = NotifyBatcher(engine, REALTIME_CHANNEL, retry_delays=(0.01,) * 5)
        await batcher.publish(json.dumps({"user_id": "u", "frame": frame(1)}))
        async with engine.connect() as connection:
            pid = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        admin = await asyncpg.connect(asyncpg_dsn(pg_url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await asyncio.gather(
            *(batcher.publish(json.dumps({"user_id": "u", "frame": frame(i)})) for i in (2, 3))
        )
        await listener.wait_for(3)
        assert [m["frame"]["notification"]["id"] for m in listener.messages] == [
            "n-1",
            "n-2",
            "n-3",
        ]
    finally:
        await engine.dispose()


async def test_an_unreachable_database_fails_every_caller_after_the_retries(pg_url: str) -> None:
    missing = (
        make_url(pg_url)
        .set(database="notifier_no_such_database")
        .render_as_string(hide_password=False)
    )
    engine = create_engine(missing)
    try:
        fanout = PostgresFanout(engine, retry_delays=(0.01, 0.01))
        results = await asyncio.gather(
            *(fanout.publish("u", frame(i)) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Exception) for r in results), results
        # The publisher is not stuck: the next frame tries (and fails) afresh.
        with pytest.raises(Exception, match="notifier_no_such_database"):
            await fanout.publish("u", frame(9))
    finally:
        await engine.dispose()
