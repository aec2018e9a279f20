"""Fault case 5: PostgreSQL goes away in the middle of dispatch, and comes back.

A private cluster (never the shared server) behind one API process and two worker processes;
200 email+websocket notifications for 10 users whose sockets stay connected and ack. When the
SMTP peer has taken some emails and holds the next ones inside DATA, every backend of the
database is terminated and the cluster stopped. While it is down the API answers 503 with the
JSON error envelope (enqueue, inbox) and /readyz is 503; the held emails are let through, so
workers get a 250 they cannot record. Then the cluster starts again.

Afterwards, with no process restarted: every notification ends ``delivered`` (websocket acked,
email delivered), nothing sits past its lease, and the peer got every email once, except the
documented window: an email whose 250 was lost with the database is resent once, with the same
Message-ID, and only among the sends that were in flight at the moment of the outage.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.faults.clients import UserSocket
from tests.faults.peers import TimedSmtpPeer
from tests.faults.processes import PrivateCluster, ProcessSet, ServiceProcess, poll_until
from tests.faults.scenario import (
    Producer,
    channel_counts,
    db_connect,
    leased_unsent,
    service_env,
    status_counts,
    stuck_past_lease,
)
from tests.support.service import migrate

pytestmark = pytest.mark.postgres

USERS = 10
PER_USER = 20
TOTAL = USERS * PER_USER
WORKERS = 2
CONCURRENCY = 16  # notifications in flight per worker
SMTP_CONNECTIONS = 4  # EmailChannel's pool size per worker: the most a worker holds in DATA
GATE_AFTER = 40
LEASE = 4.0
POLL = 0.5
OUTAGE_AFTER_RELEASE = LEASE + 1.0  # past the lease: the workers give up recording


async def _db(url: str, query: str) -> object:
    connection = await db_connect(url)
    try:
        if query == "status":
            return await status_counts(connection)
        if query == "channels":
            return await channel_counts(connection)
        if query == "in_flight":
            return await leased_unsent(connection, "email")
        if query == "stuck":
            return await stuck_past_lease(connection, LEASE + POLL)
        raise ValueError(query)
    finally:
        await connection.close()


async def _connect_users(producer: Producer, api: ServiceProcess) -> list[UserSocket]:
    sockets = []
    for i in range(USERS):
        user = f"outage-{i:02d}"
        await producer.put_recipient(user, email=f"{user}@example.com")
        socket = UserSocket(user, f"{api.ws_base}/v1/ws?token={await producer.token(user)}")
        socket.start()
        sockets.append(socket)

    async def all_open() -> tuple[bool, int]:
        opened = sum(s.open.is_set() for s in sockets)
        return opened == len(sockets), opened

    await poll_until(all_open, timeout=15, what="every websocket client connected")
    return sockets


async def _wait_mid_dispatch(url: str, smtp: TimedSmtpPeer) -> tuple[set[str], float]:
    """Until both workers are full and their emails sit in DATA at the gate; returns the ids of
    the notifications whose email is in flight (leased, not recorded), and when that was read.
    Workers keep claiming until the outage: what they claim after the read is in flight too."""

    async def saturated() -> tuple[bool, object]:
        in_flight = await _db(url, "in_flight")
        assert isinstance(in_flight, list)
        # A worker refills its slots in chunks (half a batch), so "busy" is half full or more.
        busy = len(in_flight) >= WORKERS * CONCURRENCY // 2
        full = smtp.held >= WORKERS * SMTP_CONNECTIONS and busy
        state = {"received": len(smtp.messages), "held": smtp.held, "leased": len(in_flight)}
        return full, state

    await poll_until(saturated, timeout=30, what="workers saturated, emails held in DATA")
    taken_at = time.time()
    in_flight = await _db(url, "in_flight")
    assert isinstance(in_flight, list)
    return {str(nid) for nid in in_flight}, taken_at


async def _check_down(producer: Producer, anonymous: httpx.AsyncClient) -> None:
    """While the database is down: 503 with the JSON envelope for enqueue, inbox, readiness."""
    response = await producer.http.post(
        "/v1/notifications",
        json={"user_id": "outage-00", "title": "during the outage", "message": "x"},
    )
    _assert_unavailable(response)
    _assert_unavailable(await producer.http.get("/v1/users/outage-00/notifications"))
    ready = await anonymous.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["error"]["code"] == "unavailable"


async def _wait_recovered(
    url: str, anonymous: httpx.AsyncClient, sockets: list[UserSocket], procs: ProcessSet
) -> None:
    async def api_ready() -> tuple[bool, int]:
        return (r := await anonymous.get("/readyz")).status_code == 200, r.status_code

    await poll_until(api_ready, timeout=30, what="/readyz 200 after the restart")

    async def nothing_stuck() -> tuple[bool, object]:
        stuck = await _db(url, "stuck")
        return stuck == 0, stuck

    await poll_until(nothing_stuck, timeout=3 * LEASE + 20, what="no row left past its lease")

    async def all_delivered() -> tuple[bool, object]:
        statuses = await _db(url, "status")
        channels = await _db(url, "channels")
        done = statuses == {"delivered": TOTAL} and channels == {
            "email:delivered": TOTAL,
            "websocket:delivered": TOTAL,
        }
        return done, {"status": statuses, "channels": channels}

    try:
        await poll_until(all_delivered, timeout=90, what="every notification delivered")
    except AssertionError as exc:
        connects = [(s.user_id, len(s.received), s.connects) for s in sockets]
        raise AssertionError(
            f"{exc}\nsockets (user, received, connects): {connects}\n{procs.logs()}"
        ) from None


def _assert_emails(
    smtp: TimedSmtpPeer, owner: dict[str, str], in_flight: set[str], read_at: float
) -> int:
    """Every email arrived; a second copy (same Message-ID) only of one in flight at the
    outage: leased and unrecorded when ``in_flight`` was read at ``read_at``, or first sent
    after that (claimed between the read and the outage). An email recorded before the read
    is never sent again. Returns how many were resent."""
    per_message_id = Counter(smtp.message_ids())
    assert set(per_message_id) == {f"<{nid}@notifier.test>" for nid in owner}
    resent = {mid: n for mid, n in per_message_id.items() if n > 1}
    assert all(n == 2 for n in resent.values()), f"an email arrived 3+ times: {resent}"
    first_sent: dict[str, float] = {}
    for message in smtp.messages:
        first_sent.setdefault(str(message.message["Message-ID"]), message.at)
    late = {mid.strip("<>").split("@")[0] for mid, at in first_sent.items() if at >= read_at}
    resent_ids = {mid.strip("<>").split("@")[0] for mid in resent}
    assert resent_ids <= in_flight | late, (
        f"resent emails that were not in flight at the outage: {resent_ids - in_flight - late}"
    )
    return len(resent)


async def _assert_api_and_sockets(
    producer: Producer, owner: dict[str, str], sockets: list[UserSocket]
) -> None:
    for socket in sockets:
        mine = {nid for nid, user in owner.items() if user == socket.user_id}
        missing = mine - set(socket.received)
        assert not missing, f"{socket.user_id} never got {sorted(missing)[:5]}"
    for nid in owner:
        body = await producer.get(nid)
        assert body["status"] == "delivered", body
        assert body["delivery_status"]["email"]["status"] == "delivered", body
        assert body["delivery_status"]["websocket"]["status"] == "delivered", body
    inbox = await producer.http.get("/v1/users/outage-00/notifications?limit=100")
    assert inbox.status_code == 200
    assert len(inbox.json()["items"]) == PER_USER


async def test_postgres_outage_mid_dispatch(
    private_cluster: PrivateCluster, tmp_path: Path
) -> None:
    database = f"notifier_outage_{uuid.uuid4().hex[:8]}"
    url = await private_cluster.create_database(database)
    await migrate(url)
    started = time.monotonic()

    async with (
        TimedSmtpPeer(gate_after=GATE_AFTER, gate_timeout=60) as smtp,
        ProcessSet(tmp_path / "logs") as procs,
    ):
        env = service_env(
            url,
            **smtp.settings(),
            smtp_timeout_seconds=60,  # the gate holds DATA longer than the default allows
            lease_seconds=LEASE,
            poll_interval_seconds=POLL,
            worker_concurrency=CONCURRENCY,
            worker_batch_size=CONCURRENCY,
        )
        api = await procs.serve(env)
        workers = list(
            await asyncio.gather(*(procs.worker(env, name=f"worker-{i}") for i in range(WORKERS)))
        )
        producer = Producer(api.base_url)
        anonymous = httpx.AsyncClient(base_url=api.base_url, timeout=30)
        sockets: list[UserSocket] = []
        try:
            sockets = await _connect_users(producer, api)
            created = await producer.enqueue_batch(
                [
                    {
                        "user_id": f"outage-{i % USERS:02d}",
                        "title": f"Outage {i}",
                        "message": f"notification {i} of the outage case",
                        "channels": ["websocket", "email"],
                    }
                    for i in range(TOTAL)
                ]
            )
            owner = {n["id"]: n["user_id"] for n in created}
            assert len(owner) == TOTAL

            # Mid-dispatch: some emails in, the next ones held inside DATA.
            in_flight, read_at = await _wait_mid_dispatch(url, smtp)
            received_before = len(smtp.messages)
            assert 0 < received_before < TOTAL

            # The outage.
            terminated = await private_cluster.terminate_backends(database)
            await private_cluster.stop()
            outage_at, outage_wall = time.monotonic(), time.time()
            assert terminated > 0, "nobody was connected to the database?"
            await _check_down(producer, anonymous)

            # The held emails get their 250 now: the workers cannot record it.
            smtp.open_gate()

            async def in_flight_sent() -> tuple[bool, int]:
                return len(smtp.messages) >= received_before + len(in_flight), len(smtp.messages)

            await poll_until(in_flight_sent, timeout=30, what="the in-flight emails at the peer")
            # The outage lasts a while longer, so the workers' records of those 250s fail
            # rather than land after a quick restart (fault duration, not synchronisation).
            await asyncio.sleep(OUTAGE_AFTER_RELEASE)
            down_for = time.monotonic() - outage_at
            restart_wall = time.time()
            await private_cluster.start()
            restarted_at = time.monotonic()

            # Recovery, without restarting any process.
            await _wait_recovered(url, anonymous, sockets, procs)
            drained_in = time.monotonic() - restarted_at
            resent = _assert_emails(smtp, owner, in_flight, read_at)
            await _assert_api_and_sockets(producer, owner, sockets)
            for process in (api, *workers):
                assert process.running and process.starts == 1, process.tail()

            report = {
                "notifications": TOTAL,
                "emails_received": len(smtp.messages),
                "received_before_outage": received_before,
                "received_during_outage": sum(
                    outage_wall <= at < restart_wall for at in smtp.received_at
                ),
                "in_flight_at_outage": len(in_flight),
                "resent_same_message_id": resent,
                "backends_terminated": terminated,
                "database_down_seconds": round(down_for, 2),
                "drain_after_restart_seconds": round(drained_in, 2),
                "websocket_reconnects": sum(s.connects - 1 for s in sockets),
                "total_seconds": round(time.monotonic() - started, 2),
            }
            print("fault case 5:", json.dumps(report))
        finally:
            for socket in sockets:
                await socket.stop()
            await anonymous.aclose()
            await producer.aclose()
            if not await private_cluster.is_running():
                await private_cluster.start()


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == "unavailable", body
    assert set(body["error"]) == {"code", "message", "details"}
