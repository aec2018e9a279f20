"""``python -m bench.webhook_sink PORT``: a webhook receiver on 127.0.0.1 (aiohttp) that reads
every request's body, answers 200 and counts them.

stdout and stdin: the protocol of ``bench/smtp_sink.py`` (``ready``; ``expect N GEN`` →
``done``; ``count``; ``quit``), whose counter it uses.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from bench.smtp_sink import Sink


async def _main(port: int) -> None:
    sink = Sink()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        sink.arrived()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    sink.emit({"event": "ready"})
    try:
        await sink.serve_commands()
    finally:
        await runner.cleanup()


def main() -> int:
    asyncio.run(_main(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
