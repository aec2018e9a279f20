"""The bench's run: the service processes it starts (``Bench``) and the waits on them.

Every process a scenario starts is a ``Child`` (``bench.processes``) in its own process
group, registered with the ``Bench``; ``Bench.stop_all`` (run by ``bench.run`` in a
``finally``) and an ``atexit`` hook take down whatever is still running. Traffic goes to
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from bench.databases import ADMIN_URL, admin_connection, connect, migrate_database
from bench.processes import HOST, PYTHON, REPO, Child, free_port, start_child, stop_child
from bench.sizes import Sizes

BENCH_DIR = REPO / "bench"
API_KEY = "bench-producer-key"


@dataclass
class Api:
    child: Child
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/v1/ws"


@dataclass
class Bench:
    sizes: Sizes
    runs: int
    workdir: Path
    profile: bool = False
    admin_url: str = ADMIN_URL
    token_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    children: list[Child] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)

    # -- logging --
    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def note(self, scenario: str, text: str) -> None:
        self.notes.setdefault(scenario, []).append(text)

    # -- processes --
    async def spawn(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        pipe: bool = False,
    ) -> Child:
        log_path = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        child = await start_child(
            name, args, log_path=log_path, env=env if env is not None else base_env(), pipe=pipe
        )
        self.children.append(child)
        return child

    async def stop(self, child: Child, grace: float = 20.0) -> int | None:
        try:
            return await stop_child(child, grace)
        finally:
            if child in self.children:
                self.children.remove(child)

    async def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            with contextlib.suppress(Exception):
                await self.stop(child, grace=10)

    def service_env(self, database_url: str, **extra: str) -> dict[str, str]:
        env = base_env()
        env.update(
            {
                "NOTIFIER_DATABASE_URL": database_url,
                "NOTIFIER_API_KEYS": API_KEY,
                "NOTIFIER_TOKEN_SECRET": self.token_secret,
                "NOTIFIER_HOST": HOST,
                "NOTIFIER_LOG_LEVEL": "warning",
            }
        )
        if self.sizes.worker_concurrency is not None:
            env["NOTIFIER_WORKER_CONCURRENCY"] = str(self.sizes.worker_concurrency)
        env.update(extra)
        return env

    def _launch(self, module: str, args: Sequence[str], profile_to: Path | None) -> list[str]:
        if profile_to is None:
            return [PYTHON, "-m", module, *args]
        return [PYTHON, "-m", "bench.profiled", str(profile_to), module, *args]

    async def start_api(
        self,
        database_url: str,
        *,
        env: dict[str, str] | None = None,
        module: str = "runtime",
        args: Sequence[str] = ("serve",),
        profile_to: Path | None = None,
        name: str = "api",
    ) -> Api:
        port = free_port()
        full_env = self.service_env(database_url, NOTIFIER_PORT=str(port), **(env or {}))
        child = await self.spawn(name, self._launch(module, args, profile_to), env=full_env)
        api = Api(child, port)
        await wait_ready(api, timeout=60)
        return api

    async def start_worker(
        self,
        database_url: str,
        *,
        env: dict[str, str] | None = None,
        module: str = "runtime",
        args: Sequence[str] = ("worker",),
        profile_to: Path | None = None,
        name: str = "worker",
        listen_channel: str = "notifier_dispatch",
    ) -> Child:
        full_env = self.service_env(database_url, **(env or {}))
        child = await self.spawn(name, self._launch(module, args, profile_to), env=full_env)
        await wait_listening(child, database_url, listen_channel, timeout=60)
        await asyncio.sleep(0.5)  # its first (empty) claim and the idle wait
        return child

    # -- databases --
    @contextlib.asynccontextmanager
    async def database(self, label: str, *, migrate: bool = True) -> AsyncIterator[str]:
        name = f"notifier_bench_{label}_{uuid.uuid4().hex[:8]}"
        admin = await admin_connection(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)
        try:
            if migrate:
                await migrate_database(url)
            yield url
        finally:
            admin = await admin_connection(self.admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    async def profiled(
        self,
        key: str,
        body: Callable[[Path], Awaitable[None]],
    ) -> None:
        """Run ``body(profile_path)`` (which starts the process to profile with ``profile_to``
        and stops it), then keep the text profile under ``key``."""
        if not self.profile:
            return
        path = self.workdir / f"profile-{re.sub(r'[^a-z0-9]+', '-', key.lower())}.txt"
        self.log(f"profiling {key}")
        try:
            await body(path)
        except Exception as exc:  # a failed profile must not fail the figures
            self.log(f"profiling {key} failed: {exc}")
            return
        if path.exists():
            self.profiles[key] = path.read_text(errors="replace")


SERVICE_ENV: dict[str, str] = {}


def base_env() -> dict[str, str]:
    """This environment without any NOTIFIER_* setting, with the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    # ``bench.run --service-env`` passes settings to every service process (for A/Bs).
    env.update(SERVICE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def wait_ready(api: Api, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if not api.child.alive:
                raise api.child.fail("exited before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"{api.base_url}/readyz")
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise api.child.fail(f"not ready within {timeout:.0f}s")


async def wait_listening(
    child: Child,
    database_url: str,
    channel: str,
    timeout: float,  # noqa: ASYNC109
) -> None:
    """Until a backend of ``child``'s database has LISTENed on ``channel`` (the worker is
    waiting for work). pg_stat_activity shows each backend's last statement."""
    name = make_url(database_url).database
    deadline = time.monotonic() + timeout
    connection = await connect(database_url)
    try:
        while time.monotonic() < deadline:
            if not child.alive:
                raise child.fail("exited before it was listening")
            found = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE $2",
                name,
                f'LISTEN "{channel}"%',
            )
            if found:
                return
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    raise child.fail(f"never LISTENed on {channel} within {timeout:.0f}s")


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.025,
    what: str,
    alive: Sequence[Child] = (),
) -> float:
    """Poll ``check`` until it is true; returns the ``time.time()`` at which it was (wall
    clock, comparable with the timestamps other processes on this machine report)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return time.time()
        for child in alive:
            if not child.alive:
                raise child.fail(f"exited while waiting for {what}")
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what}: not done within {timeout:.0f}s")
