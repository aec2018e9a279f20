"""``python -m bench.scenario_storm [--quick] [--runs N]``: a failure storm (issue 13), not part
of ``bench.run``; its figures are recorded by hand at the end of ``bench/RESULTS.md``.

N failed-task reports for U users through the API (``POST /v1/tasks``, then the ``PATCH
{"status": "failed"}`` storm, user after user) into one ``notifier serve`` and one ``notifier
worker``, with a real SMTP sink (aiosmtpd in this process, on its own thread) that counts the
emails and stamps their arrival:

- **digest** (``NOTIFIER_DIGEST_TASK_FAILURES_SECONDS`` = the window, ``leading``): the worker
  runs through the storm; wanted: 2U emails (each user's first failure at once, then one
  digest). Timed: from a window's close (its ``closes_at``) to its digest's arrival at the
  sink, the slowest of the U windows: re-claiming the held members, closing the window,
  sending the digest, while the rest of the storm still comes in.
- **baseline** (the setting 0: no digest): the same storm queued with the worker stopped, then
  drained; timed from the first email's arrival to the last (N emails).

``ratio`` = digest time / baseline time (lower: the digests are out sooner than the storm
itself would have drained). Runs alternate baseline, digest, baseline, …; each on a database
of its own. Prints one JSON line per figure on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.databases import connect
from bench.harness import API_KEY, Bench, wait_until
from bench.processes import HOST, Child, cpu_seconds, free_port
from bench.sizes import FULL, SMOKE


@dataclass(frozen=True)
class StormSize:
    users: int
    per_user: int
    window_seconds: int
    concurrency: int  # requests in flight from this process


FULL_STORM = StormSize(users=100, per_user=100, window_seconds=60, concurrency=32)
QUICK_STORM = StormSize(users=10, per_user=20, window_seconds=3, concurrency=8)
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([0-9a-f-]{36})@", re.IGNORECASE | re.MULTILINE)


class CountingSink:
    """Accepts every message at once; keeps (notification id, arrival time) of each."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        found = _MESSAGE_ID.search(bytes(envelope.original_content or b""))
        self.arrivals.append((found.group(1).decode() if found else "?", time.time()))
        return "250 2.0.0 OK"


@dataclass
class RunResult:
    emails: int
    seconds: float  # digest: windows' close → last digest; baseline: first → last email
    worker_cpu: float
    storm_seconds: float  # the PATCH phase
    extra: dict[str, Any]
    # The worker's CPU once it was ready, before the storm (its start-up, the same on both
    # sides of an A/B; 0 where it started on a full queue and was not idle first).
    startup_cpu: float = 0.0


async def _requests(
    client: httpx.AsyncClient, calls: list[tuple[str, str, dict[str, Any]]], concurrency: int
) -> None:
    queue = iter(calls)

    async def lane() -> None:
        for method, path, body in queue:
            for attempt in range(4):
                try:
                    response = await client.request(method, path, json=body)
                    break
                except httpx.TransportError:
                    # A keep-alive connection the server closed as it was reused: try again.
                    if attempt == 3:
                        raise
            # 409 after a retry: the lost answer's request had taken effect.
            if response.status_code >= 300 and not (attempt and response.status_code == 409):
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def storm_run(
    bench: Bench,
    size: StormSize,
    *,
    digest: bool,
    profile_to: Path | None = None,
    live: bool = False,
) -> RunResult:
    label = "stormd" if digest else "storm0"
    total = size.users * size.per_user
    sink = CountingSink()
    port = free_port()
    controller = Controller(sink, hostname=HOST, port=port)
    controller.start()
    try:
        async with bench.database(label) as url:
            env = {
                "NOTIFIER_SMTP_HOST": HOST,
                "NOTIFIER_SMTP_PORT": str(port),
                "NOTIFIER_SMTP_FROM": "Bench <bench@notifier.test>",
                "NOTIFIER_SMTP_STARTTLS": "false",
                "NOTIFIER_RATE_LIMIT_KEY_PER_SECOND": "0",
                "NOTIFIER_RATE_LIMIT_RECIPIENT_PER_MINUTE": "0",
                "NOTIFIER_DIGEST_TASK_FAILURES_SECONDS": str(size.window_seconds if digest else 0),
            }
            api = await bench.start_api(url, env=env)
            users = [f"storm-{u:03d}" for u in range(size.users)]
            # User after user: each user's storm lands within its window even where the API
            # takes minutes over all of them (one user's window is what one digest covers).
            tasks = [(user, f"t-{user}-{i}") for user in users for i in range(size.per_user)]
            async with httpx.AsyncClient(
                base_url=api.base_url,
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=60,
                limits=httpx.Limits(max_connections=size.concurrency),
            ) as client:
                recipients = [
                    ("PUT", f"/v1/users/{u}/recipient", {"email": f"{u}@example.com"})
                    for u in users
                ]
                await _requests(client, recipients, size.concurrency)
                creates = [
                    ("POST", "/v1/tasks", {"task_id": t, "user_id": u, "task_type": "export"})
                    for u, t in tasks
                ]
                await _requests(client, creates, size.concurrency)
                worker = (
                    await bench.start_worker(url, env=env, profile_to=profile_to)
                    if digest or live
                    else None
                )
                startup_cpu = cpu_seconds(worker.pid) if worker is not None else 0.0
                bench.log(f"{label}: storm of {total} failures for {size.users} users")
                started = time.time()
                fails = [("PATCH", f"/v1/tasks/{t}", {"status": "failed"}) for _, t in tasks]
                await _requests(client, fails, size.concurrency)
                storm_seconds = time.time() - started
            bench.log(f"{label}: storm took {storm_seconds:.1f}s")
            connection = await connect(url)
            try:
                if digest:
                    assert worker is not None
                    result = await _digest_outcome(bench, connection, sink, size, worker)
                else:
                    if worker is None:
                        worker = await bench.start_worker(url, env=env, profile_to=profile_to)
                    result = await _drain_outcome(bench, sink, total, worker)
                result.storm_seconds = storm_seconds
                result.startup_cpu = startup_cpu
            finally:
                await connection.close()
                await bench.stop_all()
            return result
    finally:
        controller.stop()


async def _digest_outcome(
    bench: Bench, connection: Any, sink: CountingSink, size: StormSize, worker: Child
) -> RunResult:
    async def settled() -> bool:
        waiting = await connection.fetchval(
            "SELECT count(*) FROM notification_deliveries "
            "WHERE channel = 'email' AND status IN ('pending', 'retrying')"
        )
        # Past every window's end, nothing left held: every digest that will go out has.
        due = await connection.fetchval(
            "SELECT count(*) FROM digest_windows WHERE closed_at IS NULL AND closes_at > now()"
        )
        return bool(waiting == 0 and due == 0)

    await wait_until(
        settled,
        timeout=size.window_seconds + 600,
        interval=0.2,
        what="every window closed and its digest sent",
        alive=[worker],
    )
    cpu = cpu_seconds(worker.pid)
    windows = await connection.fetch(
        "SELECT closes_at, digest_id FROM digest_windows WHERE digest_id IS NOT NULL"
    )
    arrived = {nid: at for nid, at in sink.arrivals}
    latencies = [arrived[str(w["digest_id"])] - w["closes_at"].timestamp() for w in windows]
    return RunResult(
        emails=len(sink.arrivals),
        seconds=max(latencies),
        worker_cpu=cpu,
        storm_seconds=0.0,
        extra={
            "windows": len(windows),
            "close_to_digest_median": round(statistics.median(latencies), 3),
            "close_to_digest_max": round(max(latencies), 3),
        },
    )


async def _drain_outcome(bench: Bench, sink: CountingSink, total: int, worker: Child) -> RunResult:
    async def drained() -> bool:
        return len(sink.arrivals) >= total

    await wait_until(
        drained, timeout=1200, interval=0.2, what=f"{total} emails drained", alive=[worker]
    )
    cpu = cpu_seconds(worker.pid)
    times = [at for _, at in sink.arrivals]
    return RunResult(
        emails=len(sink.arrivals),
        seconds=max(times) - min(times),
        worker_cpu=cpu,
        storm_seconds=0.0,
        extra={},
    )


def _line(name: str, unit: str, values: list[float], **more: Any) -> str:
    return json.dumps(
        {
            "name": name,
            "unit": unit,
            "median": round(statistics.median(values), 3),
            "samples": [round(v, 3) for v in values],
            **more,
        }
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scenario_storm")
    parser.add_argument("--quick", action="store_true", help="10 users x 20, a 3 s window")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--profile-worker",
        type=Path,
        help="write pyinstrument reports of the worker to PATH.digest / PATH.baseline "
        "(BENCH_PROFILE_FLAT=1: flat)",
    )
    parser.add_argument(
        "--live-baseline",
        action="store_true",
        help="the baseline's worker runs through the storm too (as the digest's does), "
        "instead of draining it afterwards: the same per-arrival claims on both sides",
    )
    args = parser.parse_args(argv)
    size = QUICK_STORM if args.quick else FULL_STORM
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as workdir:
        bench = Bench(sizes=SMOKE if args.quick else FULL, runs=args.runs, workdir=Path(workdir))
        digest_runs: list[RunResult] = []
        base_runs: list[RunResult] = []
        try:
            for index in range(args.runs):
                bench.log(f"run {index + 1}/{args.runs}")
                profile = args.profile_worker
                base_to = profile.with_suffix(".baseline") if profile else None
                digest_to = profile.with_suffix(".digest") if profile else None
                base_runs.append(
                    await storm_run(
                        bench, size, digest=False, profile_to=base_to, live=args.live_baseline
                    )
                )
                digest_runs.append(await storm_run(bench, size, digest=True, profile_to=digest_to))
        finally:
            await bench.stop_all()
    total = size.users * size.per_user
    digest_s = [r.seconds for r in digest_runs]
    base_s = [r.seconds for r in base_runs]
    print(
        _line(
            "storm_emails_digest",
            "emails",
            [float(r.emails) for r in digest_runs],
            want=2 * size.users,
            baseline_emails=[r.emails for r in base_runs],
            failures=total,
            users=size.users,
            window_seconds=size.window_seconds,
        )
    )
    print(
        _line(
            "storm_close_to_last_digest",
            "s",
            digest_s,
            baseline_name=f"draining the {total} emails without digest (first to last)",
            baseline=round(statistics.median(base_s), 3),
            baseline_samples=[round(v, 3) for v in base_s],
            ratio=round(statistics.median(digest_s) / statistics.median(base_s), 4),
            better="lower",
            per_window=[r.extra for r in digest_runs],
        )
    )
    print(
        _line(
            "storm_worker_cpu",
            "s",
            [r.worker_cpu for r in digest_runs],
            baseline_samples=[round(r.worker_cpu, 3) for r in base_runs],
            ms_per_failure_digest=[round(1000 * r.worker_cpu / total, 2) for r in digest_runs],
            # Without the worker's start-up: what the storm itself cost it.
            ms_per_failure_digest_after_ready=[
                round(1000 * (r.worker_cpu - r.startup_cpu) / total, 2) for r in digest_runs
            ],
            ms_per_failure_baseline=[round(1000 * r.worker_cpu / total, 2) for r in base_runs],
            storm_seconds=[round(r.storm_seconds, 1) for r in digest_runs + base_runs],
        )
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(main()))
