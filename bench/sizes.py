"""The benchmark sizes: ``FULL`` (the default of ``bench.run``), ``QUICK`` and ``SMOKE``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    name: str
    dispatch_n: int  # notifications queued for one drain (scenario 1 and 5)
    dispatch_ws_clients: int  # websocket clients that receive and ack during a drain
    drain_cap: float  # longest measuring window of one notifier drain, seconds
    enqueue_seconds: float  # measured load per run of the single-enqueue test
    enqueue_warmup: float
    enqueue_concurrency: int
    batch_requests: int  # batch requests per run
    batch_size: int
    latency_rate: int  # notifications per second
    latency_seconds: float
    latency_users: int
    sockets: int
    socket_client_procs: int
    fanout_cap: float  # longest wait for one notification to reach every socket, seconds
    growth_rows: int  # settled rows under the "full table" claim run
    inbox_heavy: int  # notifications of the heavy user (part of growth_rows)
    inbox_light: int
    inbox_requests: int  # GETs per inbox measurement
    profile_seconds: float  # length of a profiled pass
    # NOTIFIER_WORKER_CONCURRENCY for every worker; None keeps the service default (smoke
    # runs set a small one to go easy on PostgreSQL's connection limit)
    worker_concurrency: int | None = None


FULL = Sizes(
    name="full",
    dispatch_n=20_000,
    dispatch_ws_clients=100,
    drain_cap=5.0,
    enqueue_seconds=5.0,
    enqueue_warmup=1.0,
    enqueue_concurrency=64,
    batch_requests=5,
    batch_size=1000,
    latency_rate=500,
    latency_seconds=30.0,
    latency_users=100,
    sockets=10_000,
    socket_client_procs=2,
    fanout_cap=5.0,
    growth_rows=1_000_000,
    inbox_heavy=100_000,
    inbox_light=100,
    inbox_requests=30,
    profile_seconds=5.0,
)
QUICK = Sizes(
    name="quick",
    dispatch_n=3_000,
    dispatch_ws_clients=100,
    drain_cap=8.0,
    enqueue_seconds=3.0,
    enqueue_warmup=1.0,
    enqueue_concurrency=64,
    batch_requests=4,
    batch_size=1000,
    latency_rate=200,
    latency_seconds=5.0,
    latency_users=50,
    sockets=1_000,
    socket_client_procs=2,
    fanout_cap=15.0,
    growth_rows=100_000,
    inbox_heavy=20_000,
    inbox_light=100,
    inbox_requests=30,
    profile_seconds=5.0,
)
SMOKE = Sizes(
    name="smoke",
    dispatch_n=200,
    dispatch_ws_clients=10,
    drain_cap=3.0,
    enqueue_seconds=1.0,
    enqueue_warmup=0.3,
    enqueue_concurrency=4,
    batch_requests=2,
    batch_size=100,
    latency_rate=50,
    latency_seconds=2.0,
    latency_users=10,
    sockets=20,
    socket_client_procs=1,
    fanout_cap=10.0,
    growth_rows=10_000,
    inbox_heavy=2_000,
    inbox_light=100,
    inbox_requests=5,
    profile_seconds=2.0,
    worker_concurrency=4,
)
SIZES = {s.name: s for s in (FULL, QUICK, SMOKE)}
