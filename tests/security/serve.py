"""A real ``notifier serve`` process on a fresh SQLite file, for the tests whose defect lives at
the process level (sockets, descriptors, the process's own log output)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from tests.faults.processes import REPO_ROOT, ProcessSet, ServiceProcess, base_env
from tests.peers.base import free_port
from tests.support.databases import sqlite_url
from tests.support.service import migrate

API_KEY = "serve-test-key-0123456789"
TOKEN_SECRET = "serve-test-token-secret-0123456789"


@contextlib.asynccontextmanager
async def api_process(
    tmp_path: Path, *, open_files: tuple[int, int] | None = None, **settings: object
) -> AsyncIterator[ServiceProcess]:
    """``notifier serve`` on a migrated SQLite file in ``tmp_path``, with ``settings``
    (NOTIFIER_* names without the prefix), until the block ends."""
    await asyncio.to_thread(tmp_path.mkdir, parents=True, exist_ok=True)
    database = sqlite_url(tmp_path)
    await migrate(database)
    env = base_env(
        database_url=database,
        api_keys=API_KEY,
        token_secret=TOKEN_SECRET,
        **{"log_level": "info", **settings},
    )
    async with ProcessSet(tmp_path / "logs") as processes:
        if open_files is None:
            yield await processes.serve(env)
            return
        # `serve` with RLIMIT_NOFILE set to (soft, hard) before it starts.
        process = LimitedServe("serve-limited", env, tmp_path / "logs" / "serve.log", open_files)
        processes.processes.append(process)
        process.start()
        await process.wait_ready()
        yield process


class LimitedServe(ServiceProcess):
    """``notifier serve`` started with RLIMIT_NOFILE set to ``limit`` (soft, hard)."""

    def __init__(self, name: str, env: dict[str, str], log: Path, limit: tuple[int, int]) -> None:
        env = {**env, "NOTIFIER_HOST": "127.0.0.1", "NOTIFIER_PORT": str(free_port())}
        super().__init__(name, "serve", env, log)
        self.limit = limit

    def start(self) -> None:
        self.starts += 1
        limit = self.limit
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runtime", "serve"],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit),
            )
