"""Scenario 3: end-to-end latency, POST sent → WebSocket frame received.

``notifier serve`` + one ``notifier worker``; ``bench/wsclients.py`` holds one acking socket per
user; ``bench/loadgen.py rate`` posts single notifications (websocket channel) at a fixed rate,
open loop, each stamped with the ``time.time()`` at which it was due to be sent. A client
subtracts that stamp from the time it receives the frame. Notifications not received within
``WAIT`` seconds of the end of the load (including POSTs the API refused, or had not answered
``WAIT`` seconds after the last was sent) are counted at the latency they had reached by then (a
lower bound), so the percentiles cannot hide them.

Baseline: raw PostgreSQL on the same machine: at the same rate, one asyncpg connection inserts a
row and ``pg_notify``s its send time in one transaction; another LISTENs; latency = wake-up
time - send time.

Where the time goes: besides the end-to-end figure, each run splits it at the points the
service shows: the row's ``created_at`` in the frame (the API handled the POST); the API's
websocket fast path (``notifier_websocket_fast_path_seconds``, scraped before and after the run):
``created_at`` -> the group's commit, and the commit -> the frame written to the socket; and two
of the worker's own histograms, scraped before it stops: ``created_at`` -> claimed
(``notifier_claim_wait_seconds``) and ``created_at`` -> the websocket channel's outcome recorded,
before its publish (``notifier_dispatch_latency_seconds``; empty when the fast path took every
notification). The clients' process reports its CPU over the run, so that it is seen not to be
the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

from bench.data import prime_statistics, refresh_statistics
from bench.databases import connect
from bench.figures import Figure, Target, percentile
from bench.harness import API_KEY, Bench
from bench.latency_stages import (
    CLAIM_HISTOGRAM,
    FAST_PATH_HISTOGRAM,
    OUTCOME_HISTOGRAM,
    Stages,
    bucket_growth,
    fast_path_buckets,
    histogram_buckets,
    metrics_text,
)
from bench.notify_census import NotifyCensus
from bench.processes import HOST, PYTHON, Child, ChildFailed, cpu_seconds, free_port
from bench.scenario_enqueue import UNLIMITED

SCENARIO = "3. End-to-end latency"
WAIT = 5.0
BASELINE_SECONDS = 5.0


async def _service_run(
    bench: Bench,
    url: str,
    api_url: str,
    api_pid: int,
    clients: Child,
    generation: int,
    profile_to: Path | None = None,
    seconds: float | None = None,
) -> tuple[list[float], str, Stages, dict[str, int]]:
    """The run's latencies (missing ones at their lower bound), what went missing, where the
    time went, and who NOTIFYed (``bench/notify_census.py``)."""
    sizes = bench.sizes
    census, listener = NotifyCensus(), await connect(url)
    await census.start(listener)
    seconds = seconds or sizes.latency_seconds
    fast_path_before = fast_path_buckets(await metrics_text(api_url))
    api_cpu = cpu_seconds(api_pid)
    metrics_port = free_port()
    worker = await bench.start_worker(
        url,
        profile_to=profile_to,
        name="worker-latency",
        env={"NOTIFIER_WORKER_METRICS_PORT": str(metrics_port)},
    )
    try:
        expected = int(sizes.latency_rate * seconds)
        await clients.send(f"expect {expected} {generation}")
        loadgen = await bench.spawn(
            "loadgen-rate",
            [
                PYTHON,
                "-m",
                "bench.loadgen",
                "rate",
                "--url",
                api_url,
                "--key",
                API_KEY,
                "--rate",
                str(sizes.latency_rate),
                "--seconds",
                str(seconds),
                "--users",
                str(sizes.latency_users),
                "--user-prefix",
                "lat-",
                "--drain",
                str(WAIT),
            ],
            pipe=True,
        )
        try:
            result = await loadgen.event("result", timeout=seconds + 240)
            api_cpu = cpu_seconds(api_pid) - api_cpu
        finally:
            await bench.stop(loadgen)
        scheduled = int(result["scheduled"])
        horizon = float(result["sent_until"]) + WAIT
        with contextlib.suppress(ChildFailed):  # what did not arrive is counted below
            await clients.event("done", timeout=max(horizon - time.time(), 0.1), gen=generation)
        await clients.send("stats")
        stats = await clients.event("stats", timeout=60)
        exposition = await metrics_text(f"http://{HOST}:{metrics_port}")
        fast_path_after = fast_path_buckets(await metrics_text(api_url))
    finally:
        await bench.stop(worker, grace=120 if profile_to else 30)
        notified = await census.stop()
        await listener.close()
    latencies = [float(x) for x in stats["latencies_ms"]]
    api_parts = [float(x) for x in stats["api_parts_ms"]] or [0.0]
    missing = max(scheduled - len(latencies), 0)
    if missing:
        floor = max([WAIT * 1000.0, *latencies])
        latencies += [floor] * missing
    if not latencies:
        raise clients.fail("no notification arrived at all")
    bench.log(
        f"  service: {scheduled} scheduled, {result['count']} accepted ({result['errors']} "
        f"errors, {result['unanswered']} unanswered, {result['late_starts']} late "
        f"starts), received {len(stats['latencies_ms'])}, missing {missing}; p50 "
        f"{percentile(latencies, 50):.1f} p99 {percentile(latencies, 99):.1f} ms; of which "
        f"until the API handled the POST: p50 {percentile(api_parts, 50):.1f} p99 "
        f"{percentile(api_parts, 99):.1f} ms"
        + (f"; answers {result['statuses']}" if result["errors"] else "")
        + f"; the clients' process used {stats['cpu_seconds'] / stats['wall_seconds']:.0%} of "
        f"a core; the API {api_cpu * 1e6 / max(int(result['count']), 1):.0f} ms of CPU per "
        "1000 notifications accepted (until the loadgen's answers were in)"
    )
    stages = Stages.of(
        api_parts,
        (
            bucket_growth(fast_path_before[0], fast_path_after[0]),
            bucket_growth(fast_path_before[1], fast_path_after[1]),
        ),
        histogram_buckets(exposition, CLAIM_HISTOGRAM),
        histogram_buckets(exposition, OUTCOME_HISTOGRAM, channel="websocket"),
        latencies,
    )
    bench.log(
        "  stages (p50, p99 ms: API / committed / written / claimed / recorded / end to end): "
        f"{stages.describe()}"
    )
    bench.log(f"  NOTIFY census: {notified}")
    lost = (
        f"{missing} of {scheduled} not received in time ({result['errors']} POSTs refused, "
        f"{result['unanswered']} unanswered within {WAIT:.0f} s)"
    )
    return latencies, lost, stages, notified


async def _baseline_run(bench: Bench, url: str) -> list[float]:
    sizes = bench.sizes
    seconds = min(sizes.latency_seconds, BASELINE_SECONDS)
    sender = await connect(url)
    listener = await connect(url)
    latencies: list[float] = []
    total = int(sizes.latency_rate * seconds)
    try:
        await sender.execute(
            "CREATE TABLE IF NOT EXISTS bench_latency (id bigserial PRIMARY KEY, sent float8)"
        )

        all_in = asyncio.Event()

        def woke(_c: object, _pid: int, _channel: str, payload: str) -> None:
            latencies.append((time.time() - float(payload)) * 1000.0)
            if len(latencies) >= total:
                all_in.set()

        await listener.add_listener("bench_latency", woke)
        start = time.time() + 0.2
        for index in range(total):
            due = start + index / sizes.latency_rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with sender.transaction():
                await sender.execute("INSERT INTO bench_latency (sent) VALUES ($1)", due)
                await sender.execute("SELECT pg_notify('bench_latency', $1)", json.dumps(due))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), WAIT)
    finally:
        await sender.close()
        await listener.close()
    if len(latencies) < total:
        latencies += [WAIT * 1000.0] * (total - len(latencies))
    bench.log(
        f"  raw NOTIFY: {total} at {sizes.latency_rate}/s; p50 {percentile(latencies, 50):.2f} "
        f"p99 {percentile(latencies, 99):.2f} ms"
    )
    return latencies


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    missing: list[str] = []
    service_runs: list[list[float]] = []
    base_runs: list[list[float]] = []
    stages: list[Stages] = []
    census: list[dict[str, int]] = []
    async with bench.database("latency") as url:
        primer = await connect(url)
        try:
            await prime_statistics(
                primer,
                int(sizes.latency_rate * sizes.latency_seconds),
                user_prefix="lat-",
                users=sizes.latency_users,
            )
        finally:
            await primer.close()
        # 500/s to 100 users is past the default per-key and per-recipient limits; the limiter
        # stays on the path, its limits out of the way (as in scenario 2).
        api = await bench.start_api(url, env=UNLIMITED)
        clients = await bench.spawn(
            "wsclients-latency",
            [
                PYTHON,
                "-m",
                "bench.wsclients",
                "--url",
                api.ws_url,
                # "=": a secret may begin with "-", which argparse would take for an option.
                f"--secret={bench.token_secret}",
                "--user-prefix",
                "lat-",
                "--count",
                str(sizes.latency_users),
                "--ack",
            ],
            pipe=True,
        )
        try:
            connected = await clients.event("connected", timeout=120)
            if connected["count"] != sizes.latency_users:
                raise clients.fail(f"only {connected['count']} clients connected")
            connection = await connect(url)
            try:
                for run in range(bench.runs):
                    bench.log(f"latency run {run + 1}/{bench.runs}")
                    base_runs.append(await _baseline_run(bench, url))
                    latencies, lost, run_stages, notified = await _service_run(
                        bench, url, api.base_url, api.child.pid, clients, run + 1
                    )
                    census.append(notified)
                    service_runs.append(latencies)
                    stages.append(run_stages)
                    missing.append(f"run {run + 1}: {lost}")
                    # Whatever the worker did not get to must not slow the next run.
                    await connection.execute(
                        "DELETE FROM notifications WHERE next_attempt_at IS NOT NULL"
                    )
                    await refresh_statistics(connection)
            finally:
                await connection.close()
            figures = _figures(service_runs, base_runs)
        finally:
            await clients.send("quit")
            await bench.stop(clients)
            await bench.stop(api.child)
    bench.note(
        SCENARIO,
        f"{sizes.latency_rate}/s for {sizes.latency_seconds:.0f} s to {sizes.latency_users} "
        "users (one socket each, acking); `bench/loadgen.py rate` is open-loop (each POST "
        "starts at its scheduled time; the stamp is that time). A fresh worker per run; the "
        "backlog a run leaves is deleted before the next. Statistics as autovacuum would keep "
        "them (this machine runs PostgreSQL with autovacuum off): ANALYZE of a queue of the "
        "run's size before the first run, VACUUM ANALYZE between runs. Each figure is the "
        "median over runs of that run's percentile. Notifications not received within "
        f"{WAIT:.0f} s after the load ended count as {WAIT:.0f} s (or the worst observed "
        f"latency if larger): {'; '.join(missing)}.",
    )
    bench.note(
        SCENARIO,
        f"Baseline: {min(sizes.latency_seconds, BASELINE_SECONDS):.0f} s per run at the same rate, "
        "INSERT + pg_notify in one transaction on one asyncpg connection, LISTEN on another, "
        "both in the bench process.",
    )
    bench.note(
        SCENARIO,
        "Where the time goes, per run, as the p50, p99 in ms from the moment the POST was due "
        "until: the API handled it (the row's `created_at`, in the frame) / from `created_at`, "
        "its group had committed (the fast path; the API's "
        f'`{FAST_PATH_HISTOGRAM}{{stage="committed"}}`) / from the commit, the API had '
        'written the frame to the socket (`stage="written"`) / from `created_at`, '
        "the worker had claimed it (the group commit's NOTIFY, the wake-up, the claim and the "
        f"reads after it: `{CLAIM_HISTOGRAM}`) / from `created_at`, the worker had recorded "
        "`sent` (besides the claim, the send and the outcome's group commit: "
        f"`{OUTCOME_HISTOGRAM}`) / end to end, until the frame arrived (besides the above, the "
        "publish through the fan-out, the API's hub and the client). The worker's histograms "
        "are scraped before it stops and interpolated within their buckets (1, 2.5, 5, 10, 25, "
        "50, 100 ms …) as Prometheus' `histogram_quantile` does: "
        + "; ".join(f"run {i + 1}: {s.describe()}" for i, s in enumerate(stages))
        + ". The worker path is profiled under dispatch_websocket, the API's under "
        "enqueue_single.",
    )
    bench.note(
        SCENARIO,
        "Transactions that took PostgreSQL's NOTIFY lock (bench/notify_census.py: enqueue "
        "commits + runs of frames published apart from them, a lower bound), per run: "
        + "; ".join(
            f"run {i + 1}: {c['notify_transactions_at_least']} ({c['wakeups']} enqueue commits, "
            f"{c['frames_riding']} frames riding them, {c['frames_apart']} apart in "
            f">= {c['apart_runs']} transactions)"
            for i, c in enumerate(census)
        ),
    )
    return figures


# Issue 15's targets, printed next to the figures.
TARGETS = {
    "p50": Target("value_max", 10.0, "<= 10 ms (issue 15)"),
    "p99": Target("value_max", 25.0, "<= 25 ms (issue 15)"),
}


def _figures(service_runs: list[list[float]], base_runs: list[list[float]]) -> list[Figure]:
    figures = []
    for label, q in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0)):
        figures.append(
            Figure(
                f"latency_{label}",
                "ms",
                [percentile(r, q) for r in service_runs],
                [percentile(r, q) for r in base_runs],
                f"raw INSERT+NOTIFY -> LISTEN {label} ms",
                "lower",
                SCENARIO,
                TARGETS.get(label),
            )
        )
    return figures
