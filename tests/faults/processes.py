"""Real service processes for the fault suite and the soak: ``notifier serve`` and
``notifier worker`` as subprocesses, a private throw-away PostgreSQL cluster that a test may stop
and restart (never the machine's shared server), and the one bounded polling helper.

    async with ProcessSet(log_dir) as procs:
        api = await procs.serve(env)            # waits for /readyz (bounded)
        worker = await procs.worker(env)        # waits for its /metrics (bounded)
        worker.kill()                           # SIGKILL
        await worker.terminate()                # SIGTERM, bounded wait, then SIGKILL
    # every process still running is stopped here, whatever happened

Each process writes stdout and stderr to ``<log_dir>/<name>.log``; ``tail()`` gives the end of it
for assertion messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import asyncpg
import httpx

from tests.peers.base import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("NOTIFIER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

T = TypeVar("T")


async def poll_until(
    probe: Callable[[], Awaitable[tuple[bool, T]]],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.2,
    what: str,
) -> T:
    """Ask ``probe`` until it answers ``(True, state)``; return that state. Fail after
    ``timeout`` seconds with the last state seen. The only polling loop of these suites: used
    where the thing awaited is public state (an HTTP answer, a database row, a log line) that
    offers no event to wait on."""
    deadline = time.monotonic() + timeout
    state: Any = None
    while True:
        done, state = await probe()
        if done:
            return cast(T, state)
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {state}"
            )
        await asyncio.sleep(interval)


def base_env(**settings: object) -> dict[str, str]:
    """The environment of a service process: this one's, minus any NOTIFIER_* setting, plus
    ``settings`` (keys without the prefix, case-insensitive)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "1" if value else "0"
        env[f"NOTIFIER_{key.upper()}"] = str(value)
    return env


class ServiceProcess:
    """One ``notifier`` subprocess (``python -m runtime <command>``)."""

    def __init__(self, name: str, command: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        port = env.get("NOTIFIER_PORT" if command == "serve" else "NOTIFIER_WORKER_METRICS_PORT")
        self.port = int(port) if port else None  # the API, or a worker's /metrics
        self.starts = 0

    @property
    def base_url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://", 1)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} of {self.name} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runtime", self.command],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal is not theirs to take
            )

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:  # noqa: ASYNC109
        """``serve``: until /readyz answers 200; ``worker``: until its /metrics answers (it
        serves them once its schema check passed and its engine is built)."""
        path = "/readyz" if self.command == "serve" else "/metrics"

        async def probe() -> tuple[bool, str]:
            if not self.running:
                code = self.process.returncode if self.process else None
                raise AssertionError(
                    f"{self.name} exited with {code} before it was ready:\n{self.tail()}"
                )
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    response = await client.get(f"{self.base_url}{path}")
            except httpx.HTTPError as exc:
                return False, f"{path}: {type(exc).__name__}"
            return response.status_code == 200, f"{path}: {response.status_code}"

        try:
            await poll_until(probe, timeout=timeout, interval=0.1, what=f"{self.name} ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log ---\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:  # noqa: ASYNC109
        """SIGTERM, then wait (bounded); SIGKILL if it has not exited by then."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, STOP_TIMEOUT)
        return self.process.returncode


class ProcessSet:
    """Starts service processes and stops every one of them on the way out."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[ServiceProcess] = []

    def _new(self, command: str, env: Mapping[str, str], name: str | None) -> ServiceProcess:
        name = name or f"{command}-{sum(p.command == command for p in self.processes) + 1}"
        process = ServiceProcess(name, command, env, self.log_dir / f"{name}.log")
        self.processes.append(process)
        return process

    async def serve(self, env: Mapping[str, str], *, name: str | None = None) -> ServiceProcess:
        env = {**env, "NOTIFIER_HOST": "127.0.0.1", "NOTIFIER_PORT": str(free_port())}
        process = self._new("serve", env, name)
        process.start()
        await process.wait_ready()
        return process

    async def worker(self, env: Mapping[str, str], *, name: str | None = None) -> ServiceProcess:
        env = {**env, "NOTIFIER_WORKER_METRICS_PORT": str(free_port())}
        process = self._new("worker", env, name)
        process.start()
        await process.wait_ready()
        return process

    async def stop_all(self) -> None:
        await asyncio.gather(*(p.terminate() for p in self.processes))

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(lines)}" for p in self.processes)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_all()


# --- a private PostgreSQL cluster ------------------------------------------------------------


class PrivateCluster:
    """A throw-away PostgreSQL cluster on a free port (RECIPES.md "PostgreSQL"), which a test
    may terminate backends of, stop and restart without disturbing anybody else.

        cluster = await PrivateCluster.create()
        url = await cluster.create_database("notifier_fault")
        await cluster.stop(); await cluster.start(); await cluster.restart()
        await cluster.destroy()
    """

    def __init__(
        self, root: Path, port: int, *, max_connections: int = 200, settings: Sequence[str] = ()
    ) -> None:
        self.root = root
        self.port = port
        self.max_connections = max_connections
        self.settings = tuple(settings)  # more server settings, "name=value"
        self.data = root / "data"
        self.log = root / "postgres.log"

    @classmethod
    async def create(
        cls, *, max_connections: int = 200, settings: Sequence[str] = ()
    ) -> PrivateCluster:
        root = Path(tempfile.mkdtemp(prefix="notifier-pg-"))
        cluster = cls(root, free_port(), max_connections=max_connections, settings=settings)
        try:
            if os.geteuid() == 0:
                user = pwd.getpwnam("postgres")
                os.chown(root, user.pw_uid, user.pw_gid)
            await cluster._run(
                PG_BIN / "initdb",
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
            await cluster.start()
        except BaseException:
            await cluster.destroy()
            raise
        return cluster

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    async def _run(self, binary: Path, *args: str, timeout: float = 60) -> str:  # noqa: ASYNC109
        argv = [str(binary), *args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            argv = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in argv)]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"{binary.name} did not finish within {timeout}s") from None
        text = out.decode(errors="replace")
        if process.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(f"{' '.join(argv)} failed ({process.returncode}):\n{text}\n{log}")
        return text

    async def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            f"-c fsync=off -c full_page_writes=off -c max_connections={self.max_connections}"
            + "".join(f" -c {setting}" for setting in self.settings)
        )
        await self._run(
            PG_BIN / "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-o",
            options,
            "start",
        )

    async def stop(self, mode: str = "fast") -> None:
        await self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def is_running(self) -> bool:
        try:
            await self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "status")
        except AssertionError:
            return False
        return True

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        dsn = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        try:
            return await asyncpg.connect(dsn, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise AssertionError(
                f"private PostgreSQL cluster unreachable at {dsn} ({type(exc).__name__}: {exc})"
            ) from exc

    async def create_database(self, name: str) -> str:
        connection = await self.connect()
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url(name)

    async def terminate_backends(self, database: str) -> int:
        """``pg_terminate_backend`` every session on ``database``; how many there were."""
        connection = await self.connect()
        try:
            rows = await connection.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await connection.close()
        return len(rows)

    async def destroy(self) -> None:
        if self.data.exists() and await self.is_running():
            with contextlib.suppress(AssertionError):
                await self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _quote(arg: str) -> str:
    return shlex.quote(arg)
