"""``python -m bench.scale``: the scale figure (issue 15) — several processes on one PostgreSQL.

1. **websocket, per broker**: two ``notifier serve`` and two ``notifier worker`` processes; half
   the users' sockets (``bench/wsclients.py``, acking) on each API process. Each broker in
   turn, run by run alternating: PostgreSQL NOTIFY (the default) and NATS
   (``NOTIFIER_FANOUT_URL``). Two measurements:
   - *drain*: ``--ws-n`` websocket notifications queued in one transaction while both workers
     wait; notifications/s from that commit until both client processes have them all;
   - *rate*: two open-loop load generators (``bench/loadgen.py rate``), one per API process, at
     ``--rate``/2 each for ``--seconds``: p50 and p99 from the POST being due to the frame.
2. **dispatch_noop, 1 vs 2 workers**: ``--noop-n`` notifications drained by one, then by two
   ``bench.noop_worker`` processes (the real worker with a no-op channel).

For every measurement, the CPU seconds each process used in the window (``/proc/<pid>/stat``:
utime + stime), and that divided by the notifications: **CPU ms per notification per process**.
On two shared cores, more processes measure contention, not a speed-up; the CPU cost per
notification is what carries to a bigger machine (docs/scaling.md). PostgreSQL's own backends
are not counted (the server is shared with other suites); the NATS server is.

Prints one JSON line per measurement on stdout and, at the end, the Markdown tables that
bench/RESULTS.md's "Scale" section holds (pasted by hand: this script never writes the file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.data import any_unsettled, prime_statistics, queue_notifications, refresh_statistics
from bench.databases import connect
from bench.figures import percentile
from bench.harness import API_KEY, Api, Bench, wait_until
from bench.processes import PYTHON, Child, raise_nofile
from bench.scale_measure import CpuMeter, Measured, nats_server_pid
from bench.scale_report import load_rows, render
from bench.scenario_enqueue import UNLIMITED
from bench.sizes import QUICK

NATS_URL = os.environ.get("NOTIFIER_BENCH_NATS_URL", "nats://127.0.0.1:4222")
USERS = 100
PREFIX = "scale-"
WAIT = 5.0  # after the load: what has not arrived by then counts at this latency (a floor)


def half_counts(n: int) -> tuple[int, int]:
    """How many of ``queue_notifications``' n rows (user g % USERS, g = 1..n) go to the first
    half of the users (the first API process's sockets), and to the second."""
    first = sum(1 for g in range(1, n + 1) if g % USERS < USERS // 2)
    return first, n - first


def rate_counts(total: int) -> tuple[int, int]:
    """Likewise for one loadgen's ``total`` posts (user index % USERS, index = 0..total-1)."""
    first = sum(1 for i in range(total) if i % USERS < USERS // 2)
    return first, total - first


@dataclass
class Stack:
    """Two API processes, two workers and a client process per API on one database."""

    apis: list[Api]
    workers: list[Child]
    clients: list[Child]

    def meter(self, broker_pid: int | None, connection: asyncpg.Connection) -> CpuMeter:
        pids = {f"api{i + 1}": a.child.pid for i, a in enumerate(self.apis)}
        pids |= {f"worker{i + 1}": w.pid for i, w in enumerate(self.workers)}
        if broker_pid is not None:
            pids["nats-server"] = broker_pid
        return CpuMeter(pids, connection)


async def start_stack(bench: Bench, url: str, broker: str) -> Stack:
    env = dict(UNLIMITED)
    if broker == "nats":
        env["NOTIFIER_FANOUT_URL"] = NATS_URL
    apis = [await bench.start_api(url, env=env, name=f"api{i + 1}-{broker}") for i in range(2)]
    workers = [
        await bench.start_worker(url, env=env, name=f"worker{i + 1}-{broker}") for i in range(2)
    ]
    clients = []
    for index, api in enumerate(apis):
        child = await bench.spawn(
            f"wsclients{index + 1}-{broker}",
            [
                PYTHON,
                "-m",
                "bench.wsclients",
                "--url",
                api.ws_url,
                f"--secret={bench.token_secret}",
                "--user-prefix",
                PREFIX,
                "--first",
                str(index * USERS // 2),
                "--count",
                str(USERS // 2),
                "--ack",
            ],
            pipe=True,
        )
        connected = await child.event("connected", timeout=120)
        if connected["count"] != USERS // 2:
            raise child.fail(f"only {connected['count']} clients connected")
        clients.append(child)
    return Stack(apis, workers, clients)


async def stop_stack(bench: Bench, stack: Stack) -> None:
    for child in stack.clients:
        with contextlib.suppress(Exception):
            await child.send("quit")
    for child in [*stack.clients, *stack.workers, *(a.child for a in stack.apis)]:
        await bench.stop(child)


async def warm_up(stack: Stack, connection: asyncpg.Connection, generation: int) -> None:
    """One notification per user, until every socket has its own: the listeners are up (the
    API's readiness does not wait for them) and nothing is cold."""
    for child in stack.clients:
        await child.send(f"expect {USERS // 2} {generation}")
    await queue_notifications(connection, USERS, user_prefix=PREFIX, users=USERS)
    for child in stack.clients:
        await child.event("done", timeout=60, gen=generation)


async def drain_ws(
    bench: Bench, stack: Stack, connection: asyncpg.Connection, broker: str, n: int, generation: int
) -> Measured:
    counts = half_counts(n)
    for child, count in zip(stack.clients, counts, strict=True):
        await child.send(f"expect {count} {generation}")
    meter = stack.meter(nats_server_pid(NATS_URL) if broker == "nats" else None, connection)
    await meter.start()
    started = await queue_notifications(connection, n, user_prefix=PREFIX, users=USERS)
    ends = [
        float((await child.event("done", timeout=120, gen=generation))["t"])
        for child in stack.clients
    ]
    cpu = await meter.stop()
    return Measured(f"ws_drain_{broker}", n, max(ends) - started, cpu)


async def rate_ws(
    bench: Bench,
    stack: Stack,
    connection: asyncpg.Connection,
    broker: str,
    rate: float,
    seconds: float,
    generation: int,
) -> Measured:
    per_api = rate / 2
    total = int(per_api * seconds)
    first, second = rate_counts(total)
    for child, count in zip(stack.clients, (2 * first, 2 * second), strict=True):
        await child.send(f"expect {count} {generation}")
    meter = stack.meter(nats_server_pid(NATS_URL) if broker == "nats" else None, connection)
    await meter.start()
    t0 = time.time()
    loadgens = [
        await bench.spawn(
            f"loadgen{i + 1}-{broker}",
            [
                PYTHON,
                "-m",
                "bench.loadgen",
                "rate",
                "--url",
                api.base_url,
                "--key",
                API_KEY,
                "--rate",
                str(per_api),
                "--seconds",
                str(seconds),
                "--users",
                str(USERS),
                "--user-prefix",
                PREFIX,
                "--drain",
                str(WAIT),
            ],
            pipe=True,
        )
        for i, api in enumerate(stack.apis)
    ]
    results = []
    for loadgen in loadgens:
        try:
            results.append(await loadgen.event("result", timeout=seconds + 120))
        finally:
            await bench.stop(loadgen)
    horizon = max(float(r["sent_until"]) for r in results) + WAIT
    latencies: list[float] = []
    for child in stack.clients:
        with contextlib.suppress(Exception):  # what did not arrive is counted below
            await child.event("done", timeout=max(horizon - time.time(), 0.1), gen=generation)
    ended = time.time()
    cpu = await meter.stop()
    for child in stack.clients:
        await child.send("stats")
        latencies += [float(x) for x in (await child.event("stats", timeout=60))["latencies_ms"]]
    scheduled = sum(int(r["scheduled"]) for r in results)
    missing = max(scheduled - len(latencies), 0)
    latencies += [max([WAIT * 1000.0, *latencies])] * missing
    return Measured(
        f"ws_rate_{broker}",
        scheduled - missing,
        ended - t0,
        cpu,
        p50_ms=round(percentile(latencies, 50), 2),
        p99_ms=round(percentile(latencies, 99), 2),
        extra={"offered_per_second": rate, "load_seconds": seconds, "missing": missing},
    )


async def drain_noop(
    bench: Bench, url: str, connection: asyncpg.Connection, workers: int, n: int
) -> Measured:
    children = [
        await bench.start_worker(url, module="bench.noop_worker", args=(), name=f"noop{i + 1}")
        for i in range(workers)
    ]
    try:
        meter = CpuMeter({f"worker{i + 1}": c.pid for i, c in enumerate(children)}, connection)

        async def drained() -> bool:
            return not await any_unsettled(connection)

        await meter.start()
        started = await queue_notifications(connection, n, users=USERS)
        ended = await wait_until(
            drained, timeout=120, interval=0.02, what="noop drain", alive=children
        )
        cpu = await meter.stop()
    finally:
        for child in children:
            await bench.stop(child)
    return Measured(f"noop_{workers}_workers", n, ended - started, cpu)


def forward_cost(messages: int = 200_000) -> float:
    """Microseconds an API process spends on a frame for a user it does not hold (parse, look
    up, drop): with one subject, what every process pays for every frame."""
    from notifier.realtime.fanout import FrameForwarder, fanout_payload
    from notifier.realtime.hub import ConnectionHub

    async def loader(_user: str, _ref: object) -> None:
        return None

    forwarder = FrameForwarder(ConnectionHub(), loader)
    frame = {"type": "notification", "notification": {"id": "x" * 36, "title": "t" * 40}}
    payloads = [fanout_payload(f"user-{i}", frame).encode() for i in range(1000)]
    started = time.perf_counter()
    for i in range(messages):
        forwarder.forward(payloads[i % 1000])
    return (time.perf_counter() - started) / messages * 1e6


async def main(args: argparse.Namespace) -> None:
    raise_nofile(4096)
    rows: list[Measured] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    bench = Bench(sizes=QUICK, runs=args.runs, workdir=workdir)

    def record(m: Measured) -> None:
        rows.append(m)
        print(json.dumps(m.as_json()), flush=True)
        bench.log(
            f"  {m.label}: {m.notifications} in {m.seconds:.2f}s = {m.rate:.0f}/s"
            + (f", p50 {m.p50_ms} p99 {m.p99_ms} ms" if m.p99_ms is not None else "")
            + f"; CPU ms each: { {k: round(v, 3) for k, v in m.cpu_ms_each().items()} }"
        )

    try:
        async with bench.database("scale") as url:
            connection = await connect(url)
            try:
                await prime_statistics(connection, args.ws_n, user_prefix=PREFIX, users=USERS)
                generation = 0
                for run in range(args.runs):
                    order = ("notify", "nats") if run % 2 == 0 else ("nats", "notify")
                    for broker in order:
                        bench.log(f"run {run + 1}/{args.runs}: websocket over {broker}")
                        stack = await start_stack(bench, url, broker)
                        try:
                            generation += 1
                            await warm_up(stack, connection, generation)
                            generation += 1
                            record(
                                await drain_ws(
                                    bench, stack, connection, broker, args.ws_n, generation
                                )
                            )
                            generation += 1
                            record(
                                await rate_ws(
                                    bench,
                                    stack,
                                    connection,
                                    broker,
                                    args.rate,
                                    args.seconds,
                                    generation,
                                )
                            )
                        finally:
                            await stop_stack(bench, stack)
                        await connection.execute("DELETE FROM notifications")
                        await refresh_statistics(connection)
                for run in range(args.runs):
                    for workers in (1, 2) if run % 2 == 0 else (2, 1):
                        bench.log(f"run {run + 1}/{args.runs}: dispatch_noop, {workers} worker(s)")
                        record(await drain_noop(bench, url, connection, workers, args.noop_n))
                        await connection.execute("DELETE FROM notifications")
                        await refresh_statistics(connection)
            finally:
                await connection.close()
    finally:
        await bench.stop_all()
    print(f"\nforward, a frame for nobody here: {forward_cost():.2f} µs\n", flush=True)
    print(render(rows), flush=True)


def cli() -> int:
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--ws-n", type=int, default=5000, help="websocket drain size")
    parser.add_argument("--rate", type=float, default=400.0, help="offered load, both APIs")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the rate load")
    parser.add_argument("--noop-n", type=int, default=10_000, help="noop drain size")
    parser.add_argument("--tables", type=Path, help="only print the tables of this output")
    args = parser.parse_args()
    if args.tables is not None:
        print(render(load_rows(args.tables)))
        return 0
    asyncio.run(main(args))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
