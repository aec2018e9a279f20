"""Soak: notifications on every channel while workers are SIGKILLed and PostgreSQL restarts.

    python -m tests.soak.soak                          # 10 000 notifications (the full run)
    python -m tests.soak.soak --notifications 300 --duration 12 --kill-every 6 --max-kills 1
    python -m tests.soak.soak --json report.json

A private PostgreSQL cluster (never the machine's shared server), one ``notifier serve``, a few
``notifier worker`` processes, and local peers for every channel: SMTP, Web Push and Twilio, plus
one WebSocket client per user that acks what it gets. Notifications go in through the batch
endpoint (with an Idempotency-Key, retried on 503) at a steady rate for ``--duration`` seconds,
on websocket + email + browser + sms. Meanwhile a worker is SIGKILLed every ``--kill-every``
seconds and started again, and the cluster is restarted ``--db-restarts`` times.

A monitor reads the database twice a second and remembers when it first saw each channel
recorded as a success. At the end every message each peer received is judged:

- lost: a notification's channel that never reached its peer, or never ended a success in the
  database (must be 0);
- resent after success: a peer received a channel again after the database had recorded it as
  sent/delivered (must be 0: docs/architecture.md, "Rules");
- duplicates inside the documented window: a peer received a channel twice but the database
  had not recorded the first success (a worker killed between the provider's acceptance and its
  record; the resend carries the same Message-ID / SMS reference) — counted and reported;
- time to drain: from the end of the faults and of enqueueing until nothing is left to send.

Exit status 0 when lost and resent-after-success are both 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from notifier.vapid import generate_private_key
from tests.faults.clients import UserSocket
from tests.faults.peers import TimedPushPeer, TimedSmtpPeer
from tests.faults.processes import PrivateCluster, ProcessSet, poll_until
from tests.faults.scenario import VAPID_SUBJECT, Producer, service_env
from tests.peers import TwilioPeer
from tests.soak.judge import SuccessMonitor, judge
from tests.soak.report import CHANNELS, SoakReport
from tests.soak.stack import Stack
from tests.support.service import migrate


@dataclass
class SoakConfig:
    notifications: int = 10_000
    duration: float = 60.0  # seconds of enqueueing and faults
    users: int = 40
    workers: int = 3
    kill_every: float = 4.0
    max_kills: int | None = None
    db_restarts: int = 1
    db_down_seconds: float = 1.5
    drain_timeout: float = 240.0
    lease_seconds: float = 3.0
    seed: int = 1
    log_dir: Path | None = None


async def _enqueue(
    stack: Stack, config: SoakConfig, open_gate: asyncio.Event, report: SoakReport
) -> dict[str, int]:
    """Enqueue every notification at a steady rate; returns id -> sequence number."""
    users = list(stack.sockets)
    batch = max(10, min(500, config.notifications // max(1, int(config.duration / 0.5))))
    batches = [
        range(i, min(i + batch, config.notifications))
        for i in range(0, config.notifications, batch)
    ]
    period = config.duration / max(1, len(batches))
    accepted: dict[str, int] = {}
    start = time.monotonic()
    for index, seqs in enumerate(batches):
        await asyncio.sleep(max(0.0, start + index * period - time.monotonic()))  # pacing
        items = [
            {
                "user_id": users[seq % len(users)],
                "title": f"soak {seq:06d}",
                "message": f"soak notification {seq}",
                "channels": list(CHANNELS),
                "priority": ("low", "normal", "high")[seq % 3],
                "metadata": {"soak_seq": seq},
            }
            for seq in seqs
        ]
        key = f"soak-batch-{index}-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + 60
        while True:
            await asyncio.wait_for(open_gate.wait(), 60)
            try:
                response = await stack.producer.http.post(
                    "/v1/notifications/batch",
                    json={"notifications": items},
                    headers={"Idempotency-Key": key},
                )
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code in (200, 202):
                for n in response.json()["notifications"]:
                    accepted[n["id"]] = int(n["metadata"]["soak_seq"])
                break
            if response is not None and response.status_code != 503:
                raise AssertionError(f"enqueue: {response.status_code} {response.text[:300]}")
            report.enqueue_retries += 1
            if time.monotonic() > deadline:
                raise AssertionError("enqueue kept failing for 60 s")
            await asyncio.sleep(0.5)  # back-off before retrying a 503
    return accepted


async def _chaos(
    stack: Stack,
    config: SoakConfig,
    open_gate: asyncio.Event,
    report: SoakReport,
    rng: random.Random,
) -> None:
    """SIGKILL a worker every ``kill_every`` s (and start it again); restart the cluster
    ``db_restarts`` times, evenly spread, with enqueueing paused around it."""
    events: list[tuple[float, str]] = []
    t = config.kill_every
    while t < config.duration and (config.max_kills is None or len(events) < config.max_kills):
        events.append((t, "kill"))
        t += config.kill_every
    for i in range(config.db_restarts):
        events.append((config.duration * (i + 1) / (config.db_restarts + 1) + 0.3, "db"))
    events.sort()
    start = time.monotonic()
    for at, what in events:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))  # the fault schedule
        if what == "kill":
            victim = rng.choice(stack.workers)
            report.mark(f"SIGKILL {victim.name} (pid {victim.pid})")
            victim.kill()
            report.kills += 1
            victim.start()
            await victim.wait_ready()
            report.mark(f"{victim.name} restarted (pid {victim.pid})")
        else:
            open_gate.clear()
            report.mark("PostgreSQL stopping")
            await stack.cluster.stop()
            report.mark("PostgreSQL stopped")
            await asyncio.sleep(config.db_down_seconds)  # how long the outage lasts
            await stack.cluster.start()
            report.mark("PostgreSQL started")
            report.db_restarts += 1
            open_gate.set()


async def _drained(stack: Stack, expected: int) -> tuple[bool, dict[str, Any]]:
    try:
        connection = await asyncpg.connect(stack.dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return False, {"database": type(exc).__name__}
    try:
        statuses = {
            r["status"]: r["n"]
            for r in await connection.fetch(
                "SELECT status, count(*) AS n FROM notifications GROUP BY 1"
            )
        }
        unsettled = await connection.fetchval(
            "SELECT count(*) FROM notifications WHERE next_attempt_at IS NOT NULL"
        )
        unacked = await connection.fetchval(
            "SELECT count(*) FROM notification_deliveries "
            "WHERE channel = 'websocket' AND status <> 'delivered'"
        )
    finally:
        await connection.close()
    done = statuses.get("delivered", 0) >= expected and unsettled == 0 and unacked == 0
    return done, {"status": statuses, "unsettled": unsettled, "websocket_unacked": unacked}


async def run_soak(config: SoakConfig) -> SoakReport:
    report = SoakReport(
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    )
    rng = random.Random(config.seed)
    began = time.monotonic()
    log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="notifier-soak-"))
    cluster = await PrivateCluster.create()
    try:
        database = "notifier_soak"
        url = await cluster.create_database(database)
        await migrate(url)
        async with (
            TimedSmtpPeer() as smtp,
            TimedPushPeer() as push,
            TwilioPeer() as twilio,
            ProcessSet(log_dir) as procs,
        ):
            env = service_env(
                url,
                **smtp.settings(),
                **twilio.settings(),
                vapid_private_key=generate_private_key(),
                vapid_subject=VAPID_SUBJECT,
                push_allow_private_endpoints=True,
                lease_seconds=config.lease_seconds,
            )
            api = await procs.serve(env)
            workers = list(
                await asyncio.gather(
                    *(procs.worker(env, name=f"worker-{i + 1}") for i in range(config.workers))
                )
            )
            stack = Stack(
                cluster,
                database,
                url,
                procs,
                api,
                workers,
                env,
                smtp,
                push,
                twilio,
                Producer(api.base_url),
                {},
            )
            monitor = SuccessMonitor(stack.dsn)
            try:
                await _run_phases(stack, config, report, rng, monitor)
            finally:
                await monitor.stop()
                for socket in stack.sockets.values():
                    await socket.stop()
                await stack.producer.aclose()
    finally:
        await cluster.destroy()
    report.total_seconds = round(time.monotonic() - began, 2)
    return report


async def _run_phases(
    stack: Stack,
    config: SoakConfig,
    report: SoakReport,
    rng: random.Random,
    monitor: SuccessMonitor,
) -> None:
    for i in range(config.users):
        user = f"soak-{i:03d}"
        await stack.producer.put_recipient(
            user, email=f"{user}@example.com", phone=f"+1415555{i:04d}"
        )
        await stack.producer.subscribe_push(user, stack.push.subscribe().as_json())
        token = await stack.producer.token(user)
        socket = UserSocket(user, f"{stack.api.ws_base}/v1/ws?token={token}")
        socket.start()
        stack.sockets[user] = socket
    monitor.start()
    open_gate = asyncio.Event()
    open_gate.set()
    enqueue = asyncio.create_task(_enqueue(stack, config, open_gate, report))
    chaos = asyncio.create_task(_chaos(stack, config, open_gate, report, rng))
    try:
        accepted, _ = await asyncio.gather(enqueue, chaos)
    finally:
        for task in (enqueue, chaos):
            task.cancel()
    report.notifications_accepted = len(accepted)
    faults_over = time.monotonic()
    try:
        state = await poll_until(
            lambda: _drained(stack, len(accepted)),
            timeout=config.drain_timeout,
            interval=0.5,
            what="the queue to drain",
        )
        report.drained = True
        report.time_to_drain_seconds = round(time.monotonic() - faults_over, 2)
        report.final_status = dict(state.get("status", {}))
    except AssertionError as exc:
        report.lost_detail.append(f"not drained: {exc}")
    for process in (stack.api, *stack.workers):
        if not process.running:
            report.lost_detail.append(f"{process.name} is not running:\n{process.tail(20)}")
    await judge(stack, report, accepted, monitor)


def _parse(argv: list[str] | None) -> tuple[SoakConfig, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = SoakConfig()
    parser.add_argument("--notifications", type=int, default=defaults.notifications)
    parser.add_argument(
        "--duration", type=float, default=defaults.duration, help="seconds of enqueueing and faults"
    )
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every)
    parser.add_argument("--max-kills", type=int, default=None)
    parser.add_argument("--db-restarts", type=int, default=defaults.db_restarts)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument("--lease-seconds", type=float, default=defaults.lease_seconds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    config = SoakConfig(
        notifications=args.notifications,
        duration=args.duration,
        users=args.users,
        workers=args.workers,
        kill_every=args.kill_every,
        max_kills=args.max_kills,
        db_restarts=args.db_restarts,
        drain_timeout=args.drain_timeout,
        lease_seconds=args.lease_seconds,
        seed=args.seed,
        log_dir=args.log_dir,
    )
    return config, args.json


def main(argv: list[str] | None = None) -> int:
    config, json_path = _parse(argv)
    report = asyncio.run(run_soak(config))
    body = json.dumps(report.as_json(), indent=2)
    if json_path is not None:
        json_path.write_text(body + "\n")
    print(body)
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
