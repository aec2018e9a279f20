"""The `notifier` command as a newcomer meets it (hardening issue, newcomer items): its help,
`--version`, `notifier secrets`, the refusal of placeholder and weak secrets, and one clear line
(never a traceback) for each way the database can be out of reach at start. Each test runs the
real installed command as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from notifier.settings import Settings
from notifier.vapid import load_private_key
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.service import free_port

NOTIFIER = Path(sys.executable).with_name("notifier")
STRONG = {
    "NOTIFIER_API_KEYS": "k-" + uuid.uuid4().hex,
    "NOTIFIER_TOKEN_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
}
PG_PASSWORD = "hunter2-db-password"


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(settings)
    return env


def _notifier(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NOTIFIER), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal: exit status 2 and exactly one line on stderr, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("notifier: "), lines
    assert result.stdout == ""
    return lines[0]


def test_help_describes_every_command(tmp_path: Path) -> None:
    top = _notifier("--help", env=_env(), cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    for leftover in ("``", "It lives in"):  # RST and an internal note, once shown
        assert leftover not in top.stdout, top.stdout
    for command in ("serve", "worker", "migrate", "run", "secrets"):
        [line] = [ln for ln in top.stdout.splitlines() if ln.strip().startswith(command + " ")]
        assert len(line.split(maxsplit=1)[1]) > 10, line  # a one-line help beside it
        own = _notifier(command, "--help", env=_env(), cwd=tmp_path)
        assert own.returncode == 0, own.stderr
        description = own.stdout.split("\n\n")[1]
        assert len(description) > 60 and not description.startswith("options"), own.stdout
    assert "--host" in _notifier("serve", "--help", env=_env(), cwd=tmp_path).stdout


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = _notifier("--version", env=_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"notifier {version('notifier')}"


def test_secrets_prints_strong_values_in_env_format(tmp_path: Path) -> None:
    first = _notifier("secrets", env=_env(), cwd=tmp_path)
    second = _notifier("secrets", env=_env(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    def values(output: str) -> dict[str, str]:
        lines = [ln for ln in output.splitlines() if ln and not ln.startswith("#")]
        return dict(ln.split("=", 1) for ln in lines)

    printed = values(first.stdout)
    assert set(printed) == {
        "NOTIFIER_API_KEYS",
        "NOTIFIER_TOKEN_SECRET",
        "NOTIFIER_VAPID_PRIVATE_KEY",
    }
    assert values(second.stdout).keys() == printed.keys()
    assert not set(values(second.stdout).values()) & set(printed.values())  # new every time
    settings = Settings(
        api_keys=printed["NOTIFIER_API_KEYS"],  # type: ignore[arg-type]
        token_secret=printed["NOTIFIER_TOKEN_SECRET"],  # type: ignore[arg-type]
    )
    settings.refuse_weak_secrets()  # serve and worker accept them
    load_private_key(printed["NOTIFIER_VAPID_PRIVATE_KEY"])


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        # compose.yaml's placeholders before this issue: a token forged with the public one
        # read another user's inbox.
        ("NOTIFIER_API_KEYS", "change-me-producer-key", "placeholder"),
        ("NOTIFIER_TOKEN_SECRET", "change-me-at-least-32-random-bytes", "placeholder"),
        ("NOTIFIER_API_KEYS", "k", "1-character key"),
        ("NOTIFIER_API_KEYS", f"{uuid.uuid4().hex},short-key", "9-character key"),
        ("NOTIFIER_TOKEN_SECRET", "x" * 31, "only 31 bytes"),
    ],
)
async def test_serve_and_worker_refuse_placeholder_and_weak_secrets(
    tmp_path: Path, setting: str, value: str, says: str
) -> None:
    env = _env(
        **{**STRONG, setting: value},
        NOTIFIER_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/notifier.db",
        NOTIFIER_PORT=str(free_port()),
    )
    results = await _each_command(("serve", "worker"), env=env, cwd=tmp_path)
    for result in results:
        line = _one_line(result)
        assert setting in line and says in line, line
        assert "notifier secrets" in line, line
        assert value not in line or len(value) < 2, line  # a secret is never echoed
    assert not (tmp_path / "notifier.db").exists()  # refused before touching anything


async def _each_command(
    commands: tuple[str, ...], *, env: dict[str, str], cwd: Path
) -> list[subprocess.CompletedProcess[str]]:
    """Run each command as its own process, at the same time."""
    runs = (asyncio.to_thread(_notifier, command, env=env, cwd=cwd) for command in commands)
    return list(await asyncio.gather(*runs))


@pytest.fixture(scope="module")
def unreachable_port() -> int:
    return free_port()  # nothing listens there: it was free a moment ago and nobody binds it


def _bad_urls(port: int, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """A bad NOTIFIER_DATABASE_URL → what its line must say."""
    return {
        "unreachable": (
            f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}/notifier",
            "connection refused",
        ),
        "no such database": (
            f"postgresql+asyncpg://postgres:{PG_PASSWORD}@127.0.0.1:5432/no_db_{uuid.uuid4().hex}",
            "does not exist",
        ),
        "unknown host": ("postgres://postgres@no-such-host.invalid/notifier", "cannot resolve"),
        "another driver": ("postgresql+psycopg2://postgres@127.0.0.1/notifier", "asyncpg"),
        "another database": ("mysql://root@127.0.0.1/notifier", "PostgreSQL or SQLite"),
        "not a URL": ("127.0.0.1:5432/notifier", "not a database URL"),
        "no such folder": (f"sqlite+aiosqlite:///{tmp_path}/missing/x.db", "unable to open"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unreachable",
        "no such database",
        "unknown host",
        "another driver",
        "another database",
        "not a URL",
        "no such folder",
    ],
)
async def test_a_bad_database_url_is_one_clear_line(
    tmp_path: Path, unreachable_port: int, case: str
) -> None:
    url, says = _bad_urls(unreachable_port, tmp_path)[case]
    env = _env(**STRONG, NOTIFIER_DATABASE_URL=url, NOTIFIER_PORT=str(free_port()))
    started = time.monotonic()
    results = await _each_command(("serve", "worker", "migrate"), env=env, cwd=tmp_path)
    for result in results:
        line = _one_line(result)
        assert says in line, line
        assert "NOTIFIER_DATABASE_URL" in line, line
        assert PG_PASSWORD not in line, line
        assert "Traceback" not in result.stderr
    # Refused at once, not after retrying: a bound, not a speed figure. Three Python processes
    # starting at the same time take 10-30 s on a loaded two-core machine (CI measured 30.2 s);
    # a connection retried with its 5 s timeout for minutes would exceed this.
    assert time.monotonic() - started < 90


@pytest.fixture
async def fresh_pg_database() -> AsyncIterator[str]:
    url = await create_pg_database("notifier_cli")
    try:
        yield url
    finally:
        await drop_pg_database(url)


def _plain_scheme(sqlalchemy_url: str, scheme: str) -> str:
    """The URL as hosting providers hand it out: no ``+asyncpg``."""
    return scheme + "://" + make_url(sqlalchemy_url).render_as_string(False).split("://", 1)[1]


@pytest.mark.postgres
async def test_postgresql_and_postgres_schemes_work_without_the_driver_name(
    fresh_pg_database: str, tmp_path: Path
) -> None:
    migrate = await asyncio.to_thread(
        _notifier,
        "migrate",
        env=_env(NOTIFIER_DATABASE_URL=_plain_scheme(fresh_pg_database, "postgresql")),
        cwd=tmp_path,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "up to date" in migrate.stdout

    port = free_port()
    env = _env(
        **STRONG,
        NOTIFIER_DATABASE_URL=_plain_scheme(fresh_pg_database, "postgres"),
        NOTIFIER_PORT=str(port),
    )
    log = tmp_path / "serve.log"
    process = await asyncio.to_thread(_start_serve, env, tmp_path, log)
    try:
        ready = await _ready(f"http://127.0.0.1:{port}/readyz", process)
        assert ready.status_code == 200, (ready.text, log.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 0, log.read_text()


def _start_serve(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [str(NOTIFIER), "serve"], env=env, cwd=cwd, stdout=output, stderr=output
        )


async def _ready(url: str, process: subprocess.Popen[bytes]) -> httpx.Response:
    """/readyz once the server answers. uvicorn offers no start event to another process, so
    this polls with a deadline (and stops at once if the process died)."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            assert process.poll() is None, "notifier serve exited"
            try:
                return await client.get(url)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)  # another process starting to listen: no event to await
