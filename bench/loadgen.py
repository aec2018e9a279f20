"""``python -m bench.loadgen``: HTTP load from its own process.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (``--client raw``, the
default): one connection per concurrent worker, a request is one write, a response is its status
line, its headers and ``Content-Length`` bytes. httpx (``--client httpx``, what this used
before) spends about as much CPU per request as the server it measures, and with both on the
same 2 cores the bare baseline measured the client, not the server (see bench/README.md).

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
import contextlib
import itertools
import json
import sys
import time
from collections import Counter
from typing import Any

import httpx

from bench.wsclients import run as run_loop

# What a failed exchange counts as in ``statuses`` (connection refused, reset, malformed).
FAILED = 0


class RawConnection:
    """One keep-alive HTTP/1.1 connection that POSTs and reads back the status and body.

    Enough HTTP for our servers' answers (uvicorn: ``Content-Length`` or chunked); reconnects
    when the server closes, or after an error (the exchange counts as failed)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parsed = httpx.URL(url)
        self._host = parsed.host
        self._port = parsed.port or 80
        lines = [f"Host: {self._host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._headers = ("\r\n".join(lines) + "\r\n").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        try:
            return await self._exchange(path, body)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            await self.close()
            return FAILED

    async def _exchange(self, path: str, body: bytes) -> int:
        reader, writer = self._reader, self._writer
        if reader is not None and reader.at_eof():
            # Closed by the server while idle (uvicorn's keep-alive timeout): a new one, as
            # HTTP clients check a pooled connection before they send on it.
            await self.close()
            reader = writer = None
        if reader is None or writer is None:
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._reader, self._writer = reader, writer
        writer.write(
            b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self._headers, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        elif length:
            await reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Client:
    """``post(path, body) -> status`` over at most ``connections`` connections at once."""

    def __init__(self, args: argparse.Namespace, connections: int) -> None:
        self._headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
        self._kind = args.client
        self._url = args.url
        self._idle: list[RawConnection] = []
        self._all: list[RawConnection] = []
        self._httpx: httpx.AsyncClient | None = None
        if self._kind == "httpx":
            self._httpx = httpx.AsyncClient(
                base_url=args.url,
                headers=self._headers,
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
                timeout=httpx.Timeout(120.0),
            )

    async def post(self, path: str, body: bytes) -> int:
        if self._httpx is not None:
            try:
                return (await self._httpx.post(path, content=body)).status_code
            except httpx.HTTPError:
                return FAILED
        # Callers bound their own concurrency, so a free connection is there or one is made.
        connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = RawConnection(self._url, self._headers)
            self._all.append(connection)
        # Back to the idle list only after a whole exchange: one cancelled halfway (``rate``
        # gives up on late answers) has a response in flight and is not reused.
        status = await connection.post(path, body)
        self._idle.append(connection)
        return status

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._httpx is not None:
            await self._httpx.aclose()
        for connection in self._all:
            await connection.close()


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


def templated(user: str, key: str) -> dict[str, Any]:
    """The same notification as ``notification``, by template (``--template``)."""
    return {
        "user_id": user,
        "template": key,
        "data": {"build": 1234, "seconds": 192},
        "notification_type": "success",
        "priority": "normal",
        "channels": ["websocket"],
    }


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
    elif args.template:
        bodies = [
            json.dumps(templated(f"{args.user_prefix}{i}", args.template)).encode()
            for i in range(args.users)
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

    async with Client(args, args.concurrency) as client:

        async def worker(stop_at: float) -> None:
            nonlocal ok
            while time.monotonic() < stop_at:
                if args.requests and next(budget) >= args.requests:
                    return
                status = await client.post(args.path, next(cycle))
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
    async with Client(args, args.concurrency) as client:
        # Requests beyond the connection count queue here (O(1) each), not in a client's pool.
        gate = asyncio.Semaphore(args.concurrency)

        async def post(index: int, due: float) -> None:
            body = notification(
                f"{args.user_prefix}{index % args.users}", metadata={"bench_t": due}
            )
            async with gate:
                statuses[await client.post(args.path, json.dumps(body).encode())] += 1

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
    parser.add_argument("--template", default="", help="closed: enqueue by this template key")
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="HTTP client (see above)"
    )
    args = parser.parse_args()
    run_loop(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
