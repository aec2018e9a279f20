"""The fan-out brokers between real processes: two ``notifier serve`` processes and a
``notifier worker`` on one PostgreSQL, each broker in turn (NOTIFY, the default; NATS with
``NOTIFIER_FANOUT_URL``). A user's socket on either API process gets that user's frames, and
only theirs, whichever process published them.

With NATS, the broker is also killed during a run and started again (a private ``nats-server``
on a port of its own): the sockets stay open, and every notification still reaches its user —
those published after the reconnect live, those published while the server was away through the
listener's re-send of the unacked after it reconnects — and ends ``delivered`` on the client's
ack. (The same fault for NOTIFY, a PostgreSQL restart, is tests/faults/test_pg_outage.py.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.faults.clients import UserSocket
from tests.faults.processes import ProcessSet, ServiceProcess, poll_until
from tests.faults.scenario import Producer, channel_counts, db_connect, service_env
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.nats import private_nats, require_nats
from tests.support.service import migrate

pytestmark = pytest.mark.postgres

PER_USER = 15


@pytest.fixture
async def fresh_pg() -> AsyncIterator[str]:
    url = await create_pg_database("notifier_brokers")
    try:
        await migrate(url)
        yield url
    finally:
        await drop_pg_database(url)


class Users:
    """One user per API process, each with a browser-like socket (acks, de-duplicates by id)."""

    def __init__(self, apis: Sequence[ServiceProcess], producer: Producer) -> None:
        self.producer = producer
        self.sockets: list[UserSocket] = []
        self.apis = apis
        self.sent: dict[str, set[str]] = {}

    async def connect(self) -> None:
        for index, api in enumerate(self.apis):
            user = f"u{index}-{uuid.uuid4().hex[:6]}"
            token = await self.producer.token(user)
            socket = UserSocket(user, f"{api.ws_base}/v1/ws?token={token}")
            socket.start()
            self.sockets.append(socket)
            self.sent[user] = set()
        async with asyncio.timeout(10):
            for socket in self.sockets:
                await socket.open.wait()

    async def enqueue(self, count: int) -> None:
        """``count`` websocket notifications for each user, interleaved, through the first API."""
        for i in range(count):
            for socket in self.sockets:
                created = await self.producer.enqueue(
                    {
                        "user_id": socket.user_id,
                        "title": f"n{i}",
                        "message": "m",
                        "channels": ["websocket"],
                    }
                )
                self.sent[socket.user_id].add(str(created["id"]))

    async def all_received(self, what: str, timeout: float = 30) -> None:  # noqa: ASYNC109
        async def probe() -> tuple[bool, dict[str, int]]:
            missing = {s.user_id: len(self.sent[s.user_id] - s.received.keys()) for s in self}
            return not any(missing.values()), missing

        await poll_until(probe, timeout=timeout, what=what)

    def __iter__(self) -> Any:
        return iter(self.sockets)

    async def stop(self) -> None:
        for socket in self.sockets:
            await socket.stop()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ProcessSet]:
    async with ProcessSet(tmp_path / "logs") as procs:
        yield procs


async def run_two_apis(
    procs: ProcessSet, env: dict[str, str]
) -> tuple[list[ServiceProcess], Producer]:
    apis = [await procs.serve(env), await procs.serve(env)]
    await procs.worker(env)
    return apis, Producer(apis[0].base_url)


def assert_each_got_only_their_own(users: Users) -> None:
    for socket in users:
        assert set(socket.received) == users.sent[socket.user_id]
        # Still the first connection: the broker carried the frames, not the replay on connect.
        assert socket.connects == 1


async def all_acked(database_url: str, total: int) -> None:
    connection = await db_connect(database_url)
    try:

        async def probe() -> tuple[bool, dict[str, int]]:
            counts = await channel_counts(connection)
            return counts.get("websocket:delivered", 0) == total, counts

        await poll_until(probe, timeout=30, what="every websocket channel acked")
    finally:
        await connection.close()


@pytest.mark.parametrize("broker", ["notify", "nats"])
async def test_each_api_process_forwards_its_users_frames(
    broker: str, fresh_pg: str, stack: ProcessSet
) -> None:
    fanout_url = await require_nats() if broker == "nats" else None
    apis, producer = await run_two_apis(stack, service_env(fresh_pg, fanout_url=fanout_url))
    users = Users(apis, producer)
    try:
        await users.connect()
        # The first frame each: proves the listeners are up (readiness does not wait for them).
        await users.enqueue(1)
        await users.all_received("a first frame on each API process")
        await users.enqueue(PER_USER)
        await users.all_received(f"{PER_USER} more frames for each user")
        assert_each_got_only_their_own(users)
        await all_acked(fresh_pg, (PER_USER + 1) * len(apis))
    finally:
        await users.stop()
        await producer.aclose()


async def test_a_nats_restart_loses_no_notification(
    fresh_pg: str, stack: ProcessSet, tmp_path: Path
) -> None:
    async with private_nats(tmp_path) as nats:
        apis, producer = await run_two_apis(stack, service_env(fresh_pg, fanout_url=nats.url))
        users = Users(apis, producer)
        try:
            await users.connect()
            await users.enqueue(PER_USER)
            await users.all_received("frames before the restart")

            await nats.stop()
            await users.enqueue(PER_USER)  # published while the broker is away
            await nats.start()
            await users.enqueue(PER_USER)  # after it is back, while the clients reconnect

            await users.all_received("every frame after the restart", timeout=45)
            assert_each_got_only_their_own(users)
            await all_acked(fresh_pg, 3 * PER_USER * len(apis))
            for process in stack.processes:
                assert process.running, process.tail()
        finally:
            await users.stop()
            await producer.aclose()
