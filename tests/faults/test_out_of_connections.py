"""A worker whose database is out of connections ("sorry, too many clients already", SQLSTATE
53300) waits for it like for any outage, instead of dying on the error; the API answers 503.

Regression: ``is_database_unavailable`` did not recognise SQLSTATE classes 53/57P that asyncpg
reports as a plain ``DBAPIError`` while connecting, so ``Dispatcher._claim_some`` re-raised
and the worker process exited.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.faults.peers import TimedSmtpPeer
from tests.faults.processes import PrivateCluster, ProcessSet, poll_until
from tests.faults.scenario import Producer, service_env
from tests.support.service import migrate

pytestmark = pytest.mark.postgres


async def test_worker_waits_out_too_many_clients(tmp_path: Path) -> None:
    cluster = await PrivateCluster.create(max_connections=12)
    hogs: list[asyncpg.Connection] = []
    try:
        database = f"notifier_conns_{uuid.uuid4().hex[:8]}"
        url = await cluster.create_database(database)
        await migrate(url)
        async with TimedSmtpPeer() as smtp, ProcessSet(tmp_path / "logs") as procs:
            env = service_env(url, **smtp.settings(), poll_interval_seconds=0.2)
            api = await procs.serve(env)
            worker = await procs.worker(env)
            producer = Producer(api.base_url)
            try:
                dsn = f"postgresql://postgres@127.0.0.1:{cluster.port}/{database}"

                async def out_of_connections() -> tuple[bool, object]:
                    # Drop every session of the services, then take every free slot before
                    # they reconnect; repeat until the worker has met the refusal.
                    if hogs:
                        await hogs[0].execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND NOT (pid = ANY($2::int[]))",
                            database,
                            [h.get_server_pid() for h in hogs],
                        )
                    while True:
                        try:
                            hogs.append(await asyncpg.connect(dsn, timeout=5))
                        except asyncpg.TooManyConnectionsError:
                            break
                    log = worker.log_path.read_text(errors="replace")
                    met = "database unavailable while claiming" in log
                    return met or not worker.running, {"hogs": len(hogs), "running": worker.running}

                await poll_until(
                    out_of_connections, timeout=20, what="the worker to meet 'too many clients'"
                )
                assert worker.running, f"the worker died on 'too many clients':\n{worker.tail()}"
                response = await producer.http.get("/v1/users/someone/notifications")
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "unavailable"

                for hog in hogs:
                    await hog.close()
                hogs.clear()

                async def enqueued() -> tuple[bool, int]:
                    response = await producer.http.post(
                        "/v1/notifications",
                        json={
                            "user_id": "conns",
                            "title": "after the crunch",
                            "message": "m",
                            "channels": ["email"],
                            "recipient": {"email": "conns@example.com"},
                        },
                        headers={"Idempotency-Key": "after-the-crunch"},
                    )
                    return response.status_code in (200, 202), response.status_code

                await poll_until(enqueued, timeout=20, what="the API to take work again")
                [mail] = await smtp.wait_for_messages(1, timeout=20)
                assert mail.rcpt_tos == ["conns@example.com"]
                assert worker.running and worker.starts == 1
            finally:
                await producer.aclose()
    finally:
        for hog in hogs:
            await hog.close()
        await cluster.destroy()
