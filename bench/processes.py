"""The bench's child processes: each in its own process group, stopped with SIGTERM then
SIGKILL, and killed should the bench die (``PR_SET_PDEATHSIG``, plus an ``atexit`` hook)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import resource
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"


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


def postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL process on this machine (the server, its backends and
    background workers), including those that ended since: their time is in the server's
    children's fields."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        name, _, rest = text.partition("(")[2].rpartition(")")
        fields = rest.split()
        if name == "postgres":
            # utime + stime, and on the server, its waited-for children's (ended backends).
            total += sum(int(f) for f in fields[11:15]) / ticks
    return total


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


async def start_child(
    name: str,
    args: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str],
    pipe: bool = False,
) -> Child:
    """Start ``args`` in the repository, in a new process group; stderr (and stdout unless
    ``pipe``) goes to ``log_path``."""
    log_file = log_path.open("wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE if pipe else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if pipe else log_file,
            stderr=log_file,
            preexec_fn=_new_session_dying_with_parent,
            limit=64 * 1024 * 1024,
        )
    finally:
        log_file.close()
    _LIVE_GROUPS.add(proc.pid)
    return Child(name, proc, log_path)


async def stop_child(child: Child, grace: float = 20.0) -> int | None:
    """``child.stop``, after which the exit hook no longer needs to kill its group."""
    try:
        return await child.stop(grace)
    finally:
        _LIVE_GROUPS.discard(child.pid)
