"""``python -m bench.loadgen``: HTTP load from its own process (httpx, async).

``closed``: ``--concurrency`` workers post back to back for ``--seconds`` (after ``--warmup``)
or for ``--requests`` requests in all; the body is one notification, or with
``--batch-size N`` a batch of N.

``rate``: open loop, ``--rate`` single POSTs per second for ``--seconds``, each started at its
scheduled time whatever the earlier ones are doing (no coordinated omission); its metadata
carries ``bench_t``, the ``time.time()`` at which it was due to be sent. Requests still
unanswered ``--drain`` seconds after the last one was started are cancelled and counted.

Prints one line: ``{"event": "result", "count": ok, "errors": n, "seconds": s, ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from typing import Any

import httpx

from bench.wsclients import run as run_loop


def notification(user: str, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "title": "Build finished",
        "message": "Your build #1234 finished successfully in 3m 12s.",
        "notification_type": "success",
        "priority": "normal",
        "channels": ["websocket"],
        **extra,
    }


def _client(args: argparse.Namespace, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=args.url,
        headers={"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(120.0),
    )


async def closed(args: argparse.Namespace) -> dict[str, Any]:
    if args.batch_size:
        bodies = [
            json.dumps(
                {
                    "notifications": [
                        notification(f"{args.user_prefix}{(b * args.batch_size + i) % args.users}")
                        for i in range(args.batch_size)
                    ]
                }
            ).encode()
            for b in range(4)
        ]
    else:
        bodies = [
            json.dumps(notification(f"{args.user_prefix}{i}")).encode() for i in range(args.users)
        ]
    statuses: Counter[int] = Counter()
    counting = False
    ok = 0
    budget = itertools.count()
    cycle = itertools.cycle(bodies)

    async with _client(args, args.concurrency) as client:

        async def worker(stop_at: float) -> None:
            nonlocal ok
            while time.monotonic() < stop_at:
                if args.requests and next(budget) >= args.requests:
                    return
                try:
                    response = await client.post(args.path, content=next(cycle))
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                if counting:
                    statuses[status] += 1
                    if 200 <= status < 300:
                        ok += 1

        if args.warmup > 0:
            warm_until = time.monotonic() + args.warmup
            await asyncio.gather(*(worker(warm_until) for _ in range(args.concurrency)))
        counting = True
        started = time.perf_counter()
        stop_at = time.monotonic() + (args.seconds if not args.requests else 3600.0)
        await asyncio.gather(*(worker(stop_at) for _ in range(args.concurrency)))
        seconds = time.perf_counter() - started
    return {
        "event": "result",
        "count": ok,
        "items": ok * (args.batch_size or 1),
        "errors": sum(c for s, c in statuses.items() if not 200 <= s < 300),
        "seconds": seconds,
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def rate(args: argparse.Namespace) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    total = int(args.rate * args.seconds)
    late = 0
    async with _client(args, args.concurrency) as client:
        # Requests beyond the connection count queue here (O(1) each) rather than in
        # httpcore's pool, whose queue handling is quadratic in the number of waiters.
        gate = asyncio.Semaphore(args.concurrency)

        async def post(index: int, due: float) -> None:
            body = notification(
                f"{args.user_prefix}{index % args.users}", metadata={"bench_t": due}
            )
            async with gate:
                try:
                    response = await client.post(args.path, content=json.dumps(body).encode())
                    statuses[response.status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1

        tasks: list[asyncio.Task[None]] = []
        start = time.time() + 0.2
        for index in range(total):
            due = start + index / args.rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                late += 1
            tasks.append(asyncio.create_task(post(index, due)))
        sent_until = time.time()
        # Bounded: what the server has not answered ``--drain`` seconds after the last send
        # is given up on (and counted), so an overloaded server cannot stall the run.
        _, pending = await asyncio.wait(tasks, timeout=args.drain) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    ok = sum(c for s, c in statuses.items() if 200 <= s < 300)
    return {
        "event": "result",
        "count": ok,
        "scheduled": total,
        "unanswered": len(pending),
        "errors": total - ok - len(pending),
        "seconds": sent_until - start,
        "late_starts": late,
        "sent_until": sent_until,
        "ended": time.time(),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def _main(args: argparse.Namespace) -> None:
    result = await (closed(args) if args.mode == "closed" else rate(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.loadgen")
    parser.add_argument("mode", choices=["closed", "rate"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", default="/v1/notifications")
    parser.add_argument("--key", default="")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--requests", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--drain", type=float, default=5.0, help="rate: wait after the load")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--user-prefix", default="load-")
    args = parser.parse_args()
    run_loop(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
