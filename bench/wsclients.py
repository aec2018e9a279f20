"""``python -m bench.wsclients``: many WebSocket clients in one process, driven over stdin.

Each client is one user's socket (``/v1/ws?token=``, tokens minted locally with the bench's
token secret, exactly as ``POST /v1/users/{id}/tokens`` would). Like a browser it offers
permessage-deflate, and (with ``--ack``) it acks every notification frame it receives.

stdout: JSON events, one a line::

    {"event": "connected", "count": n, "failed": f, "seconds": s}
    {"event": "done", "gen": GEN, "t": <time.time()>, "received": n, "duplicates": d}
    {"event": "stats", "received": n, "duplicates": d, "latencies_ms": [...],
     "api_parts_ms": [...],   # POST sent -> the row's created_at, per latency sample
     "cpu_seconds": c, "wall_seconds": w}  # this process's CPU since ``expect``

stdin: ``expect N GEN`` (reset the counters; report ``done`` once N distinct notifications have
arrived), ``stats``, ``quit``.

A notification whose ``metadata.bench_t`` holds the ``time.time()`` at which its producer sent
the POST yields one latency sample (receipt minus that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from notifier.auth import UserTokens


class Clients:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sockets: list[ClientConnection] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.seen: set[str] = set()
        self.duplicates = 0
        self.latencies: list[float] = []
        # POST sent -> row created (the API's part of each latency, from the frame's created_at)
        self.api_parts: list[float] = []
        self.expect: int | None = None
        self.generation = 0
        self.done_sent = False
        self.failed = 0
        self.tokens: UserTokens | None = None
        self.since = (time.process_time(), time.perf_counter())

    def emit(self, event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def url_for(self, index: int) -> str:
        user = f"{self.args.user_prefix}{index}"
        if not self.args.secret:
            return f"{self.args.url}?user={user}"
        if self.tokens is None:
            self.tokens = UserTokens(self.args.secret, default_ttl_seconds=7 * 24 * 3600)
        return f"{self.args.url}?token={self.tokens.mint(user).token}"

    async def connect_all(self) -> None:
        started = time.perf_counter()
        gate = asyncio.Semaphore(self.args.connect_concurrency)
        urls = [self.url_for(i) for i in range(self.args.first, self.args.first + self.args.count)]

        async def one(url: str) -> None:
            async with gate:
                for attempt in range(3):
                    try:
                        socket = await connect(
                            url,
                            open_timeout=60,
                            ping_interval=None,
                            close_timeout=2,
                            max_size=2**20,
                        )
                    except (OSError, TimeoutError, ConnectionClosed, Exception):
                        if attempt == 2:
                            self.failed += 1
                            return
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    self.sockets.append(socket)
                    self.tasks.append(asyncio.create_task(self.read(socket)))
                    return

        await asyncio.gather(*(one(url) for url in urls))
        self.emit(
            {
                "event": "connected",
                "count": len(self.sockets),
                "failed": self.failed,
                "seconds": time.perf_counter() - started,
            }
        )

    async def read(self, socket: ClientConnection) -> None:
        try:
            await self._read(socket)
        except asyncio.CancelledError:
            return
        # The server closed it: say why (stderr, the bench keeps it in the run's log).
        print(f"socket closed: {socket.close_code} {socket.close_reason!r}", file=sys.stderr)

    async def _read(self, socket: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in socket:
                received = time.time()
                frame = json.loads(raw)
                if frame.get("type") != "notification":
                    continue
                notification = frame["notification"]
                ident = notification["id"]
                if ident in self.seen:
                    self.duplicates += 1
                else:
                    self.seen.add(ident)
                    sent = (notification.get("metadata") or {}).get("bench_t")
                    if isinstance(sent, int | float):
                        self.latencies.append(round((received - sent) * 1000, 3))
                        created = datetime.fromisoformat(notification["created_at"]).timestamp()
                        self.api_parts.append(round((created - sent) * 1000, 3))
                if self.args.ack:
                    await socket.send(json.dumps({"type": "ack", "id": ident}))
                self.check_done()

    def check_done(self) -> None:
        if self.expect is not None and not self.done_sent and len(self.seen) >= self.expect:
            self.done_sent = True
            self.emit(
                {
                    "event": "done",
                    "gen": self.generation,
                    "t": time.time(),
                    "received": len(self.seen),
                    "duplicates": self.duplicates,
                }
            )

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                return
            command, _, arg = line.partition(" ")
            if command == "expect":
                self.seen.clear()
                self.duplicates = 0
                self.latencies.clear()
                self.api_parts.clear()
                self.done_sent = False
                count, _, generation = arg.partition(" ")
                self.expect = int(count)
                self.since = (time.process_time(), time.perf_counter())
                self.generation = int(generation or 0)
                self.check_done()
            elif command == "stats":
                self.emit(
                    {
                        "event": "stats",
                        "received": len(self.seen),
                        "duplicates": self.duplicates,
                        "latencies_ms": self.latencies,
                        "api_parts_ms": self.api_parts,
                        "cpu_seconds": time.process_time() - self.since[0],
                        "wall_seconds": time.perf_counter() - self.since[1],
                    }
                )

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.sockets), return_exceptions=True)


async def _main(args: argparse.Namespace) -> None:
    clients = Clients(args)
    try:
        await clients.connect_all()
        await clients.commands()
    finally:
        await asyncio.wait_for(clients.close(), 30)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.wsclients")
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", default="", help="token secret; empty for the bare app")
    parser.add_argument("--user-prefix", default="user-")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ack", action="store_true")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    args = parser.parse_args()
    run(_main(args))
    return 0


def run(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop when it is there (as uvicorn is), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
