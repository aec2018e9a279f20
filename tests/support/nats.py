"""NATS for the broker tests: the machine's server (``NOTIFIER_TEST_NATS_URL``, default
nats://127.0.0.1:4222; scripts/test starts it when it is down), and a private ``nats-server``
process on a free port for the tests that stop and restart the broker (never the shared one,
which other suites use at the same time). An unreachable server or a missing binary fails the
tests that need them, naming what is missing; it never skips them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.service import free_port

NATS_URL = os.environ.get("NOTIFIER_TEST_NATS_URL", "nats://127.0.0.1:4222")


async def _port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def require_nats(url: str = NATS_URL) -> str:
    host, _, port = url.split("://", 1)[1].rpartition("@")[2].partition(":")
    if not await _port_open(host, int(port or 4222)):
        pytest.fail(
            f"no NATS server at {url}; start one (scripts/test does) or point "
            "NOTIFIER_TEST_NATS_URL at one",
            pytrace=False,
        )
    return url


class PrivateNats:
    """``nats-server`` on a free loopback port, stopped and started again on the same port."""

    def __init__(self, log_path: Path) -> None:
        binary = shutil.which("nats-server") or (
            "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
        )
        if binary is None:
            pytest.fail("nats-server is not installed (Debian package nats-server)", pytrace=False)
        self.binary = binary
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.binary, "-a", "127.0.0.1", "-p", str(self.port), stdout=log, stderr=log
            )
        async with asyncio.timeout(10):
            while not await _port_open("127.0.0.1", self.port):
                if self._process.returncode is not None:
                    raise AssertionError(f"nats-server exited: {self.log_path.read_text()[-800:]}")
                await asyncio.sleep(0.05)  # a process's port: there is no event to await

    async def stop(self) -> None:
        """Kill it at once, as a crash would: clients see their connection drop."""
        if self._process is not None:
            self._process.kill()
            await asyncio.wait_for(self._process.wait(), 10)
            self._process = None


@contextlib.asynccontextmanager
async def private_nats(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    server = PrivateNats(tmp_path / "nats-server.log")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
