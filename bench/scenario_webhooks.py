"""Scenario 6: webhook delivery throughput.

N events (``notification.delivered``, one endpoint subscribed with ``*``) are emitted in one
transaction through ``notifier.storage.webhooks.emit_events`` — the outbox statement a state
change runs — while one freshly started ``notifier worker`` waits; the clock runs from that
commit until the receiver (``bench/webhook_sink.py``, aiohttp in its own process, 200 to
everything) has all N and every delivery is recorded settled.

Baseline: ``bench/webhook_client.py``, a bare aiohttp client in its own process posting the
very same N bodies to the same receiver at the same concurrency (no database, no signing);
from its "go" until the receiver has them all. The two alternate run by run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import asyncpg

from bench.databases import connect
from bench.figures import Figure, Target
from bench.harness import Bench, wait_until
from bench.processes import PYTHON, Child, free_port, postgres_cpu_seconds
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.webhooks import create_endpoint, emit_events
from notifier.webhooks.events import WebhookEvent, channel_event, envelope_body
from notifier.webhooks.signing import new_key

SCENARIO = "6. Webhook delivery"
# Events per run, by size; concurrency of both senders (the worker's per-endpoint bound and
# its total, and the baseline client's): one endpoint, as most producers have.
EVENTS = {"full": 10_000, "quick": 3_000, "smoke": 200}
CONCURRENCY = {"full": 16, "quick": 16, "smoke": 4}
WINDOW_SECONDS = 60.0  # the longest a run may take; then the figure is what it did by then
_TABLES = "webhook_events, webhook_deliveries, webhook_attempts"


def _events(n: int) -> list[WebhookEvent]:
    events = []
    for i in range(n):
        event = channel_event(
            notification_id=uuid.uuid4(),
            user_id=f"user-{i % 100}",
            channel="email",
            status="delivered",
            attempts=1,
            last_error=None,
            provider_id=f"relay.bench:{i}",
        )
        assert event is not None
        events.append(event)
    return events


async def _emit(url: str, events: list[WebhookEvent]) -> float:
    """Emit in one transaction; the wall-clock time of its commit."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await emit_events(connection, events)
        return time.time()
    finally:
        await engine.dispose()


async def _setup(url: str, receiver: str) -> None:
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            await create_endpoint(
                session, url=receiver, events=["*"], description="bench", key=new_key(), limit=50
            )
            await session.commit()
    finally:
        await engine.dispose()


async def _settled(connection: asyncpg.Connection) -> bool:
    return not await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL)"
    )


async def _prime(url: str, connection: asyncpg.Connection, n: int, bodies: Path) -> None:
    """The planner statistics of a queue of ``n`` deliveries, as autovacuum would keep them
    (this machine runs PostgreSQL with autovacuum off; see ``bench/data.py``), and the
    baseline's bodies: those of these events, byte for byte as the worker would send them. No
    worker runs yet, so nothing is claimed."""
    await _emit(url, _events(n))
    await connection.execute(f"ANALYZE {_TABLES}")
    rows = await connection.fetch(
        "SELECT id, type, created_at, data::text AS data FROM webhook_events"
    )
    lines = [envelope_body(r["id"], r["type"], r["created_at"], r["data"]) for r in rows]
    await asyncio.to_thread(bodies.write_bytes, b"\n".join(lines))
    await connection.execute("DELETE FROM webhook_events")


async def _drain(
    bench: Bench,
    url: str,
    connection: asyncpg.Connection,
    sink: Child,
    n: int,
    env: dict[str, str],
    profile_to: Path | None = None,
) -> float:
    """Events/s of one `notifier worker` delivering ``n`` events to the sink."""
    worker = await bench.start_worker(
        url,
        env=env,
        name="worker-webhooks",
        listen_channel="notifier_webhooks",
        profile_to=profile_to,
    )
    try:
        await sink.send("expect 1 0")  # probe: the worker delivers one event first
        await _emit(url, _events(1))
        await sink.event("done", timeout=60, gen=0)
        await wait_until(lambda: _settled(connection), timeout=60, what="probe", alive=[worker])
        await sink.send(f"expect {n} 1")
        events = _events(n)
        cpu_before = worker.cpu_seconds()
        others_before = sink.cpu_seconds(), postgres_cpu_seconds()
        started = await _emit(url, events)
        pg_emitted = postgres_cpu_seconds()  # the emit's inserts are not the worker's to pay
        done = await sink.event("done", timeout=WINDOW_SECONDS, gen=1)
        first, received = float(done["first"]), float(done["t"])
        # Polled every 5 ms, not the harness's 25: the baseline's clock stops at the receiver's
        # own report, so a coarse poll here would be counted against the worker alone.
        settled = await wait_until(
            lambda: _settled(connection),
            timeout=WINDOW_SECONDS,
            interval=0.005,
            what="settled",
            alive=[worker],
        )
        cpu = worker.cpu_seconds() - cpu_before
        sink_cpu = sink.cpu_seconds() - others_before[0]
        pg_cpu = postgres_cpu_seconds() - pg_emitted
        emit_cpu = pg_emitted - others_before[1]
    finally:
        await bench.stop(worker, grace=120 if profile_to else 20)
    ended = max(float(received), settled)
    bench.log(
        f"  worker: {n} in {ended - started:.2f}s ({n / (ended - started):.0f}/s, worker CPU "
        f"{cpu:.1f}s = {1e6 * cpu / n:.0f} us each; first request after "
        f"{1000 * (first - started):.0f} ms, the rest in {1000 * (received - first):.0f} ms, "
        f"recorded {1000 * max(settled - received, 0):.0f} ms after the last; CPU each: "
        f"receiver {1e6 * sink_cpu / n:.0f} us, PostgreSQL {1e6 * pg_cpu / n:.0f} us after the "
        f"emit, whose own was {1e6 * emit_cpu / n:.0f} us)"
    )
    await connection.execute("DELETE FROM webhook_events")
    await connection.execute(f"VACUUM ANALYZE {_TABLES}")
    return n / (ended - started)


async def _baseline(
    bench: Bench, sink: Child, receiver: str, bodies: Path, n: int, concurrency: int
) -> float:
    client = await bench.spawn(
        "webhook-client",
        [PYTHON, "-m", "bench.webhook_client", receiver, str(concurrency), str(bodies)],
        pipe=True,
    )
    try:
        await client.event("ready", timeout=60)
        await sink.send(f"expect {n} 2")
        cpu_before = client.cpu_seconds()
        sink_before = sink.cpu_seconds()
        started = time.time()
        await client.send("go")
        done = await sink.event("done", timeout=WINDOW_SECONDS, gen=2)
        first, received = float(done["first"]), float(done["t"])
        sent = await client.event("sent", timeout=WINDOW_SECONDS)
        cpu = client.cpu_seconds() - cpu_before
        sink_cpu = sink.cpu_seconds() - sink_before
        if sent["failed"]:
            raise client.fail(f"{sent['failed']} posts failed")
    finally:
        with contextlib.suppress(Exception):
            await client.send("quit")
        await bench.stop(client)
    bench.log(
        f"  bare client: {n} in {received - started:.2f}s ({n / (received - started):.0f}/s, "
        f"client CPU {cpu:.1f}s = {1e6 * cpu / n:.0f} us each; first request after "
        f"{1000 * (first - started):.0f} ms; receiver CPU {1e6 * sink_cpu / n:.0f} us each)"
    )
    return n / (received - started)


async def run(bench: Bench) -> list[Figure]:
    n, concurrency = EVENTS[bench.sizes.name], CONCURRENCY[bench.sizes.name]
    port = free_port()
    receiver = f"http://127.0.0.1:{port}/hooks"
    env = {
        "NOTIFIER_WEBHOOK_ALLOW_PRIVATE_ENDPOINTS": "1",  # the receiver is on loopback
        "NOTIFIER_WEBHOOK_CONCURRENCY_PER_ENDPOINT": str(concurrency),
        "NOTIFIER_WEBHOOK_WORKER_CONCURRENCY": str(concurrency),
    }
    samples: dict[str, list[float]] = {"worker": [], "baseline": []}
    bodies = bench.workdir / "webhook-bodies.jsonl"
    async with bench.database("webhooks") as url:
        connection = await connect(url)
        sink = await bench.spawn(
            "webhook-sink", [PYTHON, "-m", "bench.webhook_sink", str(port)], pipe=True
        )
        try:
            await sink.event("ready", timeout=30)
            await _setup(url, receiver)
            await _prime(url, connection, n, bodies)
            for run_number in range(bench.runs):
                bench.log(f"webhooks run {run_number + 1}/{bench.runs}")
                samples["baseline"].append(
                    await _baseline(bench, sink, receiver, bodies, n, concurrency)
                )
                samples["worker"].append(await _drain(bench, url, connection, sink, n, env))
            figure = _figure(samples)
            if figure.met is False:

                async def profiled(path: Path) -> None:
                    await _drain(bench, url, connection, sink, n, env, profile_to=path)

                await bench.profiled(f"{figure.name} (worker process)", profiled)
        finally:
            with contextlib.suppress(Exception):
                await sink.send("quit")
            await bench.stop(sink)
            await connection.close()
    bench.note(
        SCENARIO,
        f"{n} `notification.delivered` events per run, emitted in one transaction by "
        "`emit_events` (one endpoint, `*`); `notifier worker` with "
        f"WEBHOOK_CONCURRENCY_PER_ENDPOINT = WEBHOOK_WORKER_CONCURRENCY = {concurrency}, a fresh "
        "process per run, timed from the emit's commit until the receiver has every event and "
        "every delivery is recorded settled. Baseline: `bench/webhook_client.py`, a bare "
        f"aiohttp client posting the same bodies at concurrency {concurrency} (no database, no "
        "signing), from its start until the receiver has them all. Receiver: "
        "`bench/webhook_sink.py` (aiohttp, 200 to everything), its own process, shared by both.",
    )
    return [figure]


def _figure(samples: dict[str, list[float]]) -> Figure:
    return Figure(
        "webhook_events",
        "events/s",
        samples["worker"],
        samples["baseline"],
        "bare aiohttp client posts/s",
        "higher",
        SCENARIO,
        Target("ratio_min", 0.5, ">= 0.5x a bare aiohttp client (issue 14)"),
    )
