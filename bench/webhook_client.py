"""``python -m bench.webhook_client URL CONCURRENCY BODIES``: the baseline of the webhook
scenario — a bare aiohttp client posting the bodies in the file ``BODIES`` (one JSON body a
line) to ``URL``, ``CONCURRENCY`` requests at a time, over one session: no database, no
signing, no retries; what posting those bodies costs by itself.

stdout: ``{"event": "ready"}`` once the bodies are read, then on ``go`` (stdin) it posts them
all and prints ``{"event": "sent", "t": ..., "failed": n}``; ``quit`` ends it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import uvloop

from bench.stdin_commands import stdin_commands


async def _post_all(url: str, concurrency: int, bodies: list[bytes]) -> int:
    failed = 0
    next_body = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failed
            for body in next_body:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    failed += response.status != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


async def _main(url: str, concurrency: int, bodies: list[bytes]) -> None:
    print(json.dumps({"event": "ready", "bodies": len(bodies)}), flush=True)
    async for command, _ in stdin_commands():
        if command == "go":
            failed = await _post_all(url, concurrency, bodies)
            print(json.dumps({"event": "sent", "t": time.time(), "failed": failed}), flush=True)


def main() -> int:
    # On uvloop, as `notifier worker` runs.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        bodies = [line for line in Path(sys.argv[3]).read_bytes().splitlines() if line]
        runner.run(_main(sys.argv[1], int(sys.argv[2]), bodies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
