"""Migrations from an empty database to head on both databases, the refusal to serve a schema
that is behind, and the embedded `notifier run` end to end as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic import command

from notifier.storage.db import create_engine
from notifier.storage.migrate import (
    SchemaBehindError,
    alembic_config,
    current_revision,
    ensure_schema_current,
    head_revision,
    upgrade_to_head,
)
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.service import free_port

NOTIFIER = Path(sys.executable).with_name("notifier")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    url = await create_pg_database("notifier_migrations")
    try:
        yield url
    finally:
        await drop_pg_database(url)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(extra)
    return env


async def test_empty_to_head_leaves_nothing_to_autogenerate(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        assert await current_revision(engine) is None
        await upgrade_to_head(engine)
        assert await current_revision(engine) == head_revision()
        await ensure_schema_current(engine)
        await upgrade_to_head(engine)  # a second run is a no-op
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
    # The models and the migrations agree: autogenerate would find nothing to add. (check()
    # runs its own event loop inside env.py, hence the thread.)
    await asyncio.to_thread(command.check, alembic_config(empty_database))


async def test_empty_database_is_behind(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        with pytest.raises(SchemaBehindError, match="notifier migrate"):
            await ensure_schema_current(engine)
    finally:
        await engine.dispose()


def _run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NOTIFIER), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command_name", ["serve", "worker"])
async def test_serve_refuses_a_schema_that_is_behind(
    empty_database: str, tmp_path: Path, command_name: str
) -> None:
    env = _clean_env(
        NOTIFIER_DATABASE_URL=empty_database,
        NOTIFIER_API_KEYS="k-" + uuid.uuid4().hex,
        NOTIFIER_TOKEN_SECRET=uuid.uuid4().hex + uuid.uuid4().hex,
        NOTIFIER_PORT=str(free_port()),
    )
    result = await asyncio.to_thread(_run_cli, command_name, env=env, cwd=tmp_path)
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "notifier migrate" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    # It refused before touching anything: the database is still empty.
    engine = create_engine(empty_database)
    try:
        assert await current_revision(engine) is None
    finally:
        await engine.dispose()


async def test_migrate_command_brings_an_empty_database_to_head(
    empty_database: str, tmp_path: Path
) -> None:
    env = _clean_env(NOTIFIER_DATABASE_URL=empty_database)
    result = await asyncio.to_thread(_run_cli, "migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    engine = create_engine(empty_database)
    try:
        await ensure_schema_current(engine)
    finally:
        await engine.dispose()


async def _read_until(
    stream: asyncio.StreamReader, pattern: re.Pattern[str], seen: list[str]
) -> re.Match[str]:
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError(f"stream ended before {pattern.pattern!r}; got: {''.join(seen)}")
        seen.append(line)
        match = pattern.search(line)
        if match:
            return match


@dataclass
class EmbeddedRun:
    process: asyncio.subprocess.Process
    port: int
    api_key: str
    output: list[str]  # stdout and stderr lines, as read

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> int:
        """SIGTERM, then wait for the process to end; returns its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        rest_out, rest_err = await asyncio.wait_for(self.process.communicate(), timeout=60)
        self.output += [rest_out.decode(), rest_err.decode()]
        assert self.process.returncode is not None
        return self.process.returncode


@contextlib.asynccontextmanager
async def embedded_run(directory: Path) -> AsyncIterator[EmbeddedRun]:
    """`python -m runtime run` in ``directory``, with no NOTIFIER_* settings at all."""
    port = free_port()
    env = _clean_env(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runtime",
        "run",
        "--port",
        str(port),
        cwd=directory,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    out: list[str] = []
    err: list[str] = []
    run: EmbeddedRun | None = None
    try:
        try:
            key_line = await asyncio.wait_for(
                _read_until(process.stdout, re.compile(r"^\s+(dev_\S+)\s*$"), out), timeout=60
            )
            # uvicorn says so on stderr once it accepts connections.
            await asyncio.wait_for(
                _read_until(process.stderr, re.compile(r"Uvicorn running on"), err), timeout=60
            )
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(f"`notifier run` did not start: {out} {err}") from exc
        assert "development API key" in "".join(out)
        run = EmbeddedRun(process, port, key_line.group(1), out + err)
        yield run
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def test_embedded_run_end_to_end(tmp_path: Path) -> None:
    async with embedded_run(tmp_path) as run:
        user = f"u-{uuid.uuid4().hex[:8]}"
        headers = {"Authorization": f"Bearer {run.api_key}"}
        async with httpx.AsyncClient(base_url=run.base_url, headers=headers, timeout=30) as client:
            created = await client.post(
                "/v1/notifications", json={"user_id": user, "title": "Hi", "message": "there"}
            )
            inbox = await client.get(f"/v1/users/{user}/notifications")
            refused = await client.get(
                f"/v1/users/{user}/notifications", headers={"Authorization": "Bearer nope"}
            )
        assert created.status_code == 202, created.text
        assert inbox.status_code == 200, inbox.text
        assert [n["id"] for n in inbox.json()["items"]] == [created.json()["id"]]
        assert refused.status_code == 401
        assert (tmp_path / "notifier.db").exists()
        code = await run.stop()
    output = "".join(run.output)
    assert code == 0, output
    assert "Application shutdown complete" in output, output
    assert "Traceback" not in output, output


async def test_embedded_run_drains_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    async with embedded_run(tmp_path) as run:
        code = await run.stop()
    assert code == 0, "".join(run.output)
