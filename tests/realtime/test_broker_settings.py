"""``NOTIFIER_FANOUT_URL``: what it accepts, and the one line `serve` and `worker` print when it
cannot work (a URL that is no NATS server's, SQLite, a server that does not answer). The refusals
at start run the real installed command as a process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from notifier.settings import Settings, settings_problem
from runtime.roles import nats_fanout
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.service import free_port, migrate
from tests.test_cli import STRONG, _env, _notifier, _one_line

GOOD = ["nats://127.0.0.1:4222", "nats://broker", "tls://nats.example:4443", "nats://u:pw@h:4222"]
BAD = {
    "http://127.0.0.1:4222": "scheme 'http'",
    "127.0.0.1:4222": "scheme",
    "nats://": "names no host",
    "nats://h:99999": "is not a URL",
    "nats://h:4222/notifier": "nothing after the port",
    "nats://h:4222?x=1": "nothing after the port",
}


@pytest.mark.parametrize("url", GOOD)
def test_a_nats_url_is_accepted(url: str) -> None:
    assert Settings(fanout_url=url).fanout_url == url


def test_unset_or_empty_means_the_default_broker() -> None:
    assert Settings().fanout_url is None
    assert Settings(fanout_url="  ").fanout_url is None


@pytest.mark.parametrize(("url", "says"), BAD.items())
def test_a_url_that_cannot_be_a_nats_server_is_refused_naming_the_setting(
    url: str, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(fanout_url=url)
    line = settings_problem(refused.value)
    assert line.startswith("NOTIFIER_FANOUT_URL "), line
    assert says in line, line


def test_a_password_in_the_url_is_never_echoed() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(fanout_url="http://user:s3cret-pass@h:4222")
    assert "s3cret-pass" not in settings_problem(refused.value)


def test_sqlite_keeps_its_frames_in_process() -> None:
    settings = Settings(database_url="sqlite:///x.db", fanout_url="nats://127.0.0.1:4222")
    with pytest.raises(ValueError, match="NOTIFIER_FANOUT_URL is set, but NOTIFIER_DATABASE_URL"):
        nats_fanout(settings, "test")


@pytest.fixture(scope="module")
async def migrated_pg() -> AsyncIterator[str]:
    url = await create_pg_database("notifier_fanout_cli")
    try:
        await migrate(url)
        yield url
    finally:
        await drop_pg_database(url)


@pytest.mark.postgres
async def test_serve_and_worker_refuse_a_nats_server_that_does_not_answer(
    tmp_path: Path, migrated_pg: str
) -> None:
    nobody = f"nats://127.0.0.1:{free_port()}"  # free a moment ago: nothing listens there
    env = _env(
        **STRONG,
        NOTIFIER_DATABASE_URL=migrated_pg,
        NOTIFIER_FANOUT_URL=nobody,
        NOTIFIER_PORT=str(free_port()),
        NOTIFIER_LOG_LEVEL="warning",  # the schema check's INFO lines are not the refusal
    )
    runs = (
        asyncio.to_thread(_notifier, command, env=env, cwd=tmp_path)
        for command in ("serve", "worker")
    )
    for result in await asyncio.gather(*runs):
        line = _one_line(result)
        assert line.startswith(
            f"notifier: NOTIFIER_FANOUT_URL: no NATS server answered at {nobody}"
        )
