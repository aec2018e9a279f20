"""Plumbing shared by the HTTP peers: an aiohttp app on 127.0.0.1, a free port, connection
counting, and awaiting recorded events without sleeping."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web


def free_port() -> int:
    """A port nobody listens on right now (for servers that cannot bind port 0 themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Recorder:
    """Counts recorded events and lets a test await "at least n" of them."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while True:
                self._changed.clear()
                if predicate():
                    return
                await self._changed.wait()


class HttpPeer:
    """An aiohttp application served on 127.0.0.1 at a free port.

    The aiohttp request-handler factory is wrapped so every accepted TCP connection is counted:
    SSRF tests assert that none arrived at all, not merely that no request was handled.
    """

    host = "127.0.0.1"
    # aiohttp's switch: cancel a handler when its client disconnects (default: let it run on).
    handler_cancellation = False

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        # Handlers told to hang wait on this; set at stop so nothing outlives the peer.
        self._release = asyncio.Event()

    def build_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        self._runner = web.AppRunner(
            self.build_app(),
            handle_signals=False,
            handler_cancellation=self.handler_cancellation,
        )
        await self._runner.setup()
        handler_factory = self._runner.server
        assert handler_factory is not None

        def counting_factory() -> asyncio.BaseProtocol:
            self.connections += 1
            return handler_factory()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(counting_factory, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()

    async def hang(self) -> None:
        """For a handler scripted to never answer (the client's timeout must fire)."""
        await self._release.wait()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def reset_connection(request: web.Request) -> None:
    """Drop the client's connection with a TCP reset, without any response."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER 0: close() sends RST instead of FIN, like a crashed server.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.close()
