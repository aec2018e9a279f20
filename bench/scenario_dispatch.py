"""Scenario 1: dispatch throughput.

N notifications are queued (one SQL transaction, with the NOTIFY an enqueue sends) while one
freshly started worker process waits; the clock runs from that commit until the last
notification is settled (its ``next_attempt_at`` is NULL again: outcome recorded, lease
released) and, where there is a receiver, until the receiver has them all.

- ``dispatch_noop``: ``python -m bench.noop_worker`` (the real worker with a no-op channel).
- ``dispatch_websocket``: ``notifier worker`` publishing to 100 users whose clients (another
  process) are connected to ``notifier serve`` and ack every frame; until all frames arrived.

``dispatch_email`` is scenario 7 (``scenario_email.py``), against its own baseline.

Baseline: PgQueuer draining N no-op jobs (dequeue batch 100) in its own process, same database,
measured the same way (from the enqueue's commit until its queue table is empty), alternating
run by run with the variant it is compared to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from pgqueuer import AsyncpgDriver, Queries

from bench.data import any_unsettled, prime_statistics, queue_notifications, unsettled
from bench.databases import connect, pg_dsn
from bench.figures import Figure, Target
from bench.harness import Bench, wait_until
from bench.processes import PYTHON, Child
from notifier.settings import Settings

SCENARIO = "1. Dispatch throughput"
PGQ_BATCH = 100


class Receiver(Protocol):
    """Whoever ends up with the notifications (websocket clients, the SMTP sink)."""

    async def arm(self, n: int) -> None: ...

    async def count(self) -> int: ...

    async def finished(self, timeout: float) -> float: ...  # noqa: ASYNC109


class ChildReceiver:
    """A receiver process speaking the ``expect N`` / ``done`` protocol; ``ask`` and ``answer``
    are its command and event for the count so far."""

    def __init__(self, child: Child, ask: str, answer: str) -> None:
        self.child, self.ask, self.answer = child, ask, answer
        self.generation = 0

    async def arm(self, n: int) -> None:
        self.generation += 1
        await self.child.send(f"expect {n} {self.generation}")

    async def count(self) -> int:
        await self.child.send(self.ask)
        return int((await self.child.event(self.answer, timeout=60))["received"])

    async def finished(self, timeout: float) -> float:  # noqa: ASYNC109
        done = await self.child.event("done", timeout=timeout, gen=self.generation)
        return float(done["t"])


@dataclass(frozen=True)
class Drain:
    done: int
    seconds: float
    drained: bool
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds


async def install_pgqueuer(connection: asyncpg.Connection) -> None:
    await Queries(AsyncpgDriver(connection)).install()


async def drain_pgqueuer(bench: Bench, url: str, connection: asyncpg.Connection, n: int) -> float:
    """Jobs per second of one PgQueuer consumer process draining ``n`` no-op jobs."""
    queries = Queries(AsyncpgDriver(connection))
    worker = await bench.spawn(
        "pgqueuer", [PYTHON, "-m", "bench.pgq_worker", pg_dsn(url), str(PGQ_BATCH)]
    )

    async def empty() -> bool:
        return not await connection.fetchval("SELECT EXISTS (SELECT 1 FROM pgqueuer)")

    try:
        # Probe: once one job went through, the consumer is listening and idle.
        await queries.enqueue("noop", None)
        await wait_until(empty, timeout=60, what="pgqueuer probe", alive=[worker])
        await asyncio.sleep(0.3)
        async with connection.transaction():
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
        started = time.time()
        finished = await wait_until(
            empty, timeout=max(120.0, n / 50), what="pgqueuer drain", alive=[worker]
        )
    finally:
        await bench.stop(worker)
    bench.log(f"  pgqueuer: {n} in {finished - started:.2f}s ({n / (finished - started):.0f}/s)")
    return n / (finished - started)


async def drain_notifier(
    bench: Bench,
    url: str,
    connection: asyncpg.Connection,
    n: int,
    *,
    module: str,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    channels: tuple[str, ...] = ("websocket",),
    users: int = 100,
    recipient: dict[str, str] | None = None,
    receiver: Receiver | None = None,
    profile_to: Path | None = None,
    label: str = "",
) -> Drain:
    """One worker process drains ``n`` queued notifications, for at most ``drain_cap``
    seconds: how many it settled (and the receiver got), and in how long. What is left when
    the window closes is deleted after the worker stopped."""
    cap = bench.sizes.drain_cap
    t_spawn = time.monotonic()
    worker = await bench.start_worker(
        url, module=module, args=args, env=env, profile_to=profile_to, name=f"worker{label}"
    )

    async def drained() -> bool:
        return not await any_unsettled(connection)

    t_ready = time.monotonic()
    try:
        await queue_notifications(
            connection, 1, channels=channels, user_prefix="probe-", users=1, recipient=recipient
        )
        await wait_until(drained, timeout=60, what="worker probe", alive=[worker])
        # Its websocket frame went to nobody: it would wait for an ack forever.
        await connection.execute("DELETE FROM notifications WHERE user_id LIKE 'probe-%'")
        t_probe = time.monotonic()
        await asyncio.sleep(0.3)
        if receiver is not None:
            await receiver.arm(n)
        cpu_before = worker.cpu_seconds()
        started = await queue_notifications(
            connection, n, channels=channels, users=users, recipient=recipient
        )
        try:
            ended = await wait_until(
                drained, timeout=cap, interval=0.05, what=f"drain{label}", alive=[worker]
            )
            done, all_done = n, True
            if receiver is not None:
                ended = max(ended, await receiver.finished(timeout=60))
        except TimeoutError:
            ended = time.time()
            done, all_done = n - await unsettled(connection), False
            if receiver is not None:
                done = min(done, await receiver.count())
        cpu = worker.cpu_seconds() - cpu_before
        t_stop = time.monotonic()
    finally:
        await bench.stop(worker, grace=120 if profile_to else 30)
    t_stopped = time.monotonic()
    left = await connection.execute("DELETE FROM notifications WHERE next_attempt_at IS NOT NULL")
    result = Drain(done, ended - started, all_done, cpu)
    bench.log(
        f"  drain{label}: {done}/{n} in {result.seconds:.2f}s ({result.rate:.0f}/s, worker CPU "
        f"{cpu:.2f}s = {1000 * cpu / max(done, 1):.3f} ms each){'' if all_done else ' [capped]'}"
        f"; start {t_ready - t_spawn:.1f}s, probe {t_probe - t_ready:.1f}s, stop "
        f"{t_stopped - t_stop:.1f}s, {left.split()[-1]} left"
    )
    return result


async def run(bench: Bench) -> list[Figure]:
    n, runs = bench.sizes.dispatch_n, bench.runs
    users = bench.sizes.dispatch_ws_clients
    capped: list[str] = []
    samples: dict[str, list[float]] = {"pgqueuer": [], "noop": [], "websocket": []}
    async with bench.database("dispatch") as url:
        connection = await connect(url)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(connection.close)
            await install_pgqueuer(connection)
            await prime_statistics(connection, n, users=users)
            api = await bench.start_api(url)
            stack.push_async_callback(bench.stop, api.child)
            clients = await _start_clients(bench, api.ws_url, users)
            stack.push_async_callback(_quit, bench, clients)
            variants = _variants(clients, users)
            for run in range(runs):
                bench.log(f"dispatch run {run + 1}/{runs}")
                samples["pgqueuer"].append(await drain_pgqueuer(bench, url, connection, n))
                for name, options in variants.items():
                    drain = await drain_notifier(
                        bench, url, connection, n, label=f"-{name}", **options
                    )
                    samples[name].append(drain.rate)
                    if not drain.drained:
                        capped.append(f"{name} #{run + 1} ({drain.done}/{n})")
                    if name == "websocket":
                        await _settle_acks(connection)
            base = samples["pgqueuer"]
            figures = [
                _dispatch_figure(
                    "dispatch_noop",
                    samples["noop"],
                    base,
                    Target("ratio_min", 0.6, ">= 0.6x PgQueuer (issue 15; stretch 1.0x)"),
                ),
                _dispatch_figure(
                    "dispatch_websocket",
                    samples["websocket"],
                    base,
                    Target("ratio_min", 0.4, ">= 0.4x PgQueuer (issue 15; stretch 0.5x)"),
                ),
            ]
            for figure, name in zip(figures[:2], ("noop", "websocket"), strict=True):
                if figure.met is False:
                    await _profile(bench, url, connection, figure, variants[name])
    _notes(bench, capped)
    return figures


async def _start_clients(bench: Bench, ws_url: str, users: int) -> Child:
    clients = await bench.spawn(
        "wsclients",
        [
            PYTHON,
            "-m",
            "bench.wsclients",
            "--url",
            ws_url,
            # "=": a secret may begin with "-", which argparse would take for an option.
            f"--secret={bench.token_secret}",
            "--count",
            str(users),
            "--ack",
        ],
        pipe=True,
    )
    connected = await clients.event("connected", timeout=120)
    if connected["count"] != users:
        raise clients.fail(f"only {connected['count']} of {users} clients connected")
    return clients


async def _quit(bench: Bench, child: Child) -> None:
    with contextlib.suppress(Exception):
        await child.send("quit")
    await bench.stop(child)


def _variants(clients: Child, users: int) -> dict[str, dict[str, Any]]:
    return {
        "noop": {"module": "bench.noop_worker", "args": ()},
        "websocket": {
            "module": "runtime",
            "args": ("worker",),
            "users": users,
            "receiver": ChildReceiver(clients, "stats", "stats"),
        },
    }


async def _profile(
    bench: Bench,
    url: str,
    connection: asyncpg.Connection,
    figure: Figure,
    options: dict[str, Any],
) -> None:
    n = max(100, min(bench.sizes.dispatch_n, int(figure.value * bench.sizes.profile_seconds)))

    async def body(path: Path) -> None:
        await drain_notifier(
            bench, url, connection, n, profile_to=path, label="-profiled", **options
        )
        await _settle_acks(connection)

    await bench.profiled(f"{figure.name} (worker process)", body)


def _dispatch_figure(
    name: str, subject: list[float], base: list[float], target: Target | None
) -> Figure:
    return Figure(
        name,
        "notifications/s",
        subject,
        base,
        "PgQueuer no-op jobs/s",
        "higher",
        SCENARIO,
        target,
    )


async def _settle_acks(connection: asyncpg.Connection) -> None:
    async def acked() -> bool:
        return not await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM notification_deliveries "
            "WHERE channel = 'websocket' AND status = 'sent')"
        )

    with contextlib.suppress(TimeoutError):
        await wait_until(acked, timeout=30, interval=0.2, what="acks")


def _notes(bench: Bench, capped: list[str]) -> None:
    sizes = bench.sizes
    bench.note(
        SCENARIO,
        f"{sizes.dispatch_n} notifications queued per run, one channel each, priority normal; "
        "worker settings are the service defaults (WORKER_CONCURRENCY "
        f"{_default('worker_concurrency')}, WORKER_BATCH_SIZE {_default('worker_batch_size')}). "
        f"PgQueuer {_pgq_version()} at dequeue batch {PGQ_BATCH}, unlimited concurrency, "
        "one asyncpg connection. Each run starts a fresh worker process and waits until it "
        "has processed one probe notification/job, so process start-up is not timed; the "
        "clock starts at the commit of the enqueue transaction. Runs go round-robin "
        "(PgQueuer, no-op, websocket), and both figures share the PgQueuer runs.",
    )
    bench.note(
        SCENARIO,
        f"A notifier run measures for at most {sizes.drain_cap:.0f} s (so the whole bench "
        "fits its time budget): throughput = notifications settled (and received, where there "
        "is a receiver) / elapsed; the rest of the backlog is deleted after the worker "
        "stopped. Runs that hit the window: "
        + (", ".join(capped) if capped else "none")
        + ". PgQueuer always drains its whole batch.",
    )
    bench.note(
        SCENARIO,
        "No-op channel: `bench/noop_worker.py` runs `runtime.roles.run_worker_process` "
        "itself with `build_channels` replaced by `{'websocket': NoopChannel()}` (send returns "
        "`SendResult(DELIVERED)`), so claim, load, record, release, lease renewal, metrics and "
        "LISTEN are the real ones. The websocket channel with no clients was not used: it "
        "still publishes a NOTIFY per notification.",
    )
    bench.note(
        SCENARIO,
        f"Websocket: `notifier serve` and {sizes.dispatch_ws_clients} clients "
        "(`bench/wsclients.py`, one process, acking every frame) stay up for the scenario; a "
        "run ends when the queue is drained and the clients have every frame; after it the "
        "bench waits (up to 30 s) for the acks to settle.",
    )


def _pgq_version() -> str:
    from importlib.metadata import version

    return version("pgqueuer")


def _default(setting: str) -> object:
    return Settings.model_fields[setting].default
