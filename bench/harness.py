"""Shared machinery of the benchmarks: sizes, databases, child processes, figures, RESULTS.md.

Every process a scenario starts is a ``Child`` in its own process group, registered with the
``Bench``; ``Bench.stop_all`` (run by ``bench.run`` in a ``finally``) and an ``atexit`` hook
take down whatever is still running. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
PYTHON = sys.executable
ADMIN_URL = os.environ.get(
    "NOTIFIER_BENCH_PG_URL",
    os.environ.get("NOTIFIER_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"),
)
API_KEY = "bench-producer-key"
HOST = "127.0.0.1"


# --- sizes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    name: str
    dispatch_n: int  # notifications queued for one drain (scenario 1 and 5)
    dispatch_ws_clients: int  # websocket clients that receive and ack during a drain
    drain_cap: float  # longest measuring window of one notifier drain, seconds
    enqueue_seconds: float  # measured load per run of the single-enqueue test
    enqueue_warmup: float
    enqueue_concurrency: int
    batch_requests: int  # batch requests per run
    batch_size: int
    latency_rate: int  # notifications per second
    latency_seconds: float
    latency_users: int
    sockets: int
    socket_client_procs: int
    fanout_cap: float  # longest wait for one notification to reach every socket, seconds
    growth_rows: int  # settled rows under the "full table" claim run
    inbox_heavy: int  # notifications of the heavy user (part of growth_rows)
    inbox_light: int
    inbox_requests: int  # GETs per inbox measurement
    profile_seconds: float  # length of a profiled pass
    # NOTIFIER_WORKER_CONCURRENCY for every worker; None keeps the service default (smoke
    # runs set a small one to go easy on PostgreSQL's connection limit)
    worker_concurrency: int | None = None


FULL = Sizes(
    name="full",
    dispatch_n=20_000,
    dispatch_ws_clients=100,
    drain_cap=5.0,
    enqueue_seconds=5.0,
    enqueue_warmup=1.0,
    enqueue_concurrency=64,
    batch_requests=5,
    batch_size=1000,
    latency_rate=500,
    latency_seconds=30.0,
    latency_users=100,
    sockets=10_000,
    socket_client_procs=2,
    fanout_cap=5.0,
    growth_rows=1_000_000,
    inbox_heavy=100_000,
    inbox_light=100,
    inbox_requests=30,
    profile_seconds=5.0,
)
QUICK = Sizes(
    name="quick",
    dispatch_n=3_000,
    dispatch_ws_clients=100,
    drain_cap=8.0,
    enqueue_seconds=3.0,
    enqueue_warmup=1.0,
    enqueue_concurrency=64,
    batch_requests=4,
    batch_size=1000,
    latency_rate=200,
    latency_seconds=5.0,
    latency_users=50,
    sockets=1_000,
    socket_client_procs=2,
    fanout_cap=15.0,
    growth_rows=100_000,
    inbox_heavy=20_000,
    inbox_light=100,
    inbox_requests=30,
    profile_seconds=5.0,
)
SMOKE = Sizes(
    name="smoke",
    dispatch_n=200,
    dispatch_ws_clients=10,
    drain_cap=3.0,
    enqueue_seconds=1.0,
    enqueue_warmup=0.3,
    enqueue_concurrency=4,
    batch_requests=2,
    batch_size=100,
    latency_rate=50,
    latency_seconds=2.0,
    latency_users=10,
    sockets=20,
    socket_client_procs=1,
    fanout_cap=10.0,
    growth_rows=10_000,
    inbox_heavy=2_000,
    inbox_light=100,
    inbox_requests=5,
    profile_seconds=2.0,
    worker_concurrency=4,
)
SIZES = {s.name: s for s in (FULL, QUICK, SMOKE)}


# --- figures ----------------------------------------------------------------------------------
Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Target:
    """``ratio >= x`` ("ratio_min"), ``ratio <= x`` ("ratio_max") or ``value <= x``
    ("value_max")."""

    kind: Literal["ratio_min", "ratio_max", "value_max"]
    limit: float
    text: str

    def met(self, value: float, ratio: float) -> bool:
        if self.kind == "ratio_min":
            return ratio >= self.limit
        if self.kind == "ratio_max":
            return ratio <= self.limit
        return value <= self.limit


def _sig(x: float, digits: int = 6) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


@dataclass
class Figure:
    name: str
    unit: str
    samples: list[float]
    baseline_samples: list[float]
    baseline_name: str
    better: Better
    scenario: str
    target: Target | None = None
    note: str = ""

    @property
    def value(self) -> float:
        return _sig(statistics.median(self.samples))

    @property
    def baseline(self) -> float:
        return _sig(statistics.median(self.baseline_samples))

    @property
    def ratio(self) -> float:
        return _sig(self.value / self.baseline) if self.baseline else math.inf

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "runs": len(self.samples),
            "median": self.value,
            "min": _sig(min(self.samples)),
            "max": _sig(max(self.samples)),
            "samples": [_sig(s) for s in self.samples],
            "baseline_name": self.baseline_name,
            "baseline_samples": [_sig(s) for s in self.baseline_samples],
            "better": self.better,
            "scenario": self.scenario,
            "target": self.target.text if self.target else None,
            "met": self.met,
        }


# --- child processes --------------------------------------------------------------------------
class ChildFailed(RuntimeError):
    pass


class Child:
    """A process in its own group. With ``pipe`` its stdout is a line protocol (JSON events)
    and its stdin takes commands; otherwise both go to its log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def fail(self, what: str) -> ChildFailed:
        return ChildFailed(
            f"{self.name} (pid {self.pid}, exit {self.proc.returncode}): {what}\n"
            f"--- {self.log_path} ---\n{self.log_tail()}"
        )

    async def event(self, kind: str, timeout: float, **match: Any) -> dict[str, Any]:  # noqa: ASYNC109
        """The next ``{"event": kind, **match, ...}`` line on stdout (others are skipped)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.fail(f"no {kind!r} event within {timeout:.0f}s")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                raise self.fail(f"no {kind!r} event within {timeout:.0f}s") from None
            if not raw:
                await asyncio.sleep(0.2)
                raise self.fail(f"stdout closed while waiting for {kind!r}")
            try:
                message = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(message, dict)
                and message.get("event") == kind
                and all(message.get(k) == v for k, v in match.items())
            ):
                return message
            if isinstance(message, dict) and message.get("event") == "error":
                raise self.fail(f"reported an error: {message.get('message')}")

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM to the group, then SIGKILL after ``grace`` seconds."""
        if self.alive:
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
                await self.proc.wait()
        else:
            self.signal_group(signal.SIGKILL)  # anything it left behind in its group
        return self.proc.returncode

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.M)
    if match is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return int(match.group(1))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


_LIVE_GROUPS: set[int] = set()
_PR_SET_PDEATHSIG = 1


def _new_session_dying_with_parent() -> None:
    """In the child before exec: its own process group (so it and anything it starts can be
    signalled at once), and SIGKILL should the bench die without cleaning up."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); returns the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the bench --------------------------------------------------------------------------------
def pg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


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
        log_file = log_path.open("wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                cwd=REPO,
                env=env if env is not None else base_env(),
                stdin=asyncio.subprocess.PIPE if pipe else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipe else log_file,
                stderr=log_file,
                preexec_fn=_new_session_dying_with_parent,
                limit=64 * 1024 * 1024,
            )
        finally:
            log_file.close()
        _LIVE_GROUPS.add(proc.pid)
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    async def stop(self, child: Child, grace: float = 20.0) -> int | None:
        try:
            return await child.stop(grace)
        finally:
            _LIVE_GROUPS.discard(child.pid)
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


async def connect(url: str, *, patience: float = 120.0, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect, waiting (up to ``patience`` seconds) while the server is at its
    connection limit: other test suites share this PostgreSQL."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return await asyncpg.connect(pg_dsn(url), timeout=10, **kwargs)
        except (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def admin_connection(admin_url: str) -> asyncpg.Connection:
    try:
        return await connect(admin_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(
            f"bench: PostgreSQL is unreachable at {admin_url} ({type(exc).__name__}: {exc}); "
            "start it or set NOTIFIER_BENCH_PG_URL"
        ) from exc


async def migrate_database(url: str) -> None:
    from notifier.storage.db import create_engine
    from notifier.storage.migrate import upgrade_to_head

    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


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


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- machine and RESULTS.md -------------------------------------------------------------------
def machine_info(pg_version: str) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, AttributeError):
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": pg_version,
        "nofile": f"{resource.getrlimit(resource.RLIMIT_NOFILE)}",
    }


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


async def postgres_version(admin_url: str) -> str:
    connection = await admin_connection(admin_url)
    try:
        return str(await connection.fetchval("SELECT version()")).split(" on ")[0]
    finally:
        await connection.close()


def utc_now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
