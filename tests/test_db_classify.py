"""``storage/db.py`` ``classify``: the one reading of a database error, from errors a real
PostgreSQL (and a real closed port) raise. Before, the API's ``is_database_unavailable`` and the
worker's ``is_transient_db_error`` kept two SQLSTATE lists that disagreed (57P04 was "unavailable"
to one and not to the other; 3D000 and 28 only to the API)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.storage.db import (
    DbErrorKind,
    classify,
    create_engine,
    is_database_unavailable,
    is_transient,
)
from notifier.storage.driver import after_failure
from tests.support.service import free_port
from workers.outcomes import is_transient_db_error

pytestmark = pytest.mark.postgres


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url, pool_size=3)
    yield engine
    await engine.dispose()


async def _raised(engine: AsyncEngine, *statements: str) -> BaseException:
    with pytest.raises(Exception) as caught:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    return caught.value


def _kinds(exc: BaseException) -> tuple[DbErrorKind, bool, bool, bool]:
    return (
        classify(exc),
        is_database_unavailable(exc),
        is_transient(exc),
        is_transient_db_error(exc),
    )


@pytest.mark.parametrize("where", ["closed port", "missing database"])
async def test_an_unreachable_database_is_unavailable(pg_url: str, where: str) -> None:
    url = (
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"
        if where == "closed port"
        else pg_url.rsplit("/", 1)[0] + f"/missing_{uuid.uuid4().hex[:8]}"
    )
    engine = create_engine(url)
    try:
        exc = await _raised(engine, "SELECT 1")
    finally:
        await engine.dispose()
    assert _kinds(exc) == (DbErrorKind.UNAVAILABLE, True, True, True)


async def test_a_constraint_or_bad_sql_is_the_request(engine: AsyncEngine) -> None:
    duplicate = await _raised(engine, "CREATE TEMP TABLE t (k int PRIMARY KEY)",
                              "INSERT INTO t VALUES (1), (1)")  # fmt: skip
    assert _kinds(duplicate) == (DbErrorKind.REQUEST, False, False, False)
    typo = await _raised(engine, "SELEC 1")
    assert _kinds(typo) == (DbErrorKind.REQUEST, False, False, False)


async def test_a_deadlock_is_a_conflict(engine: AsyncEngine) -> None:
    table = f"dl_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {table} (k int PRIMARY KEY)"))
        await connection.execute(text(f"INSERT INTO {table} VALUES (1), (2)"))
    both_hold_one = asyncio.Barrier(2)

    async def lock(first: int, second: int) -> None:
        async with engine.begin() as connection:
            await connection.execute(text(f"SELECT 1 FROM {table} WHERE k = {first} FOR UPDATE"))
            await both_hold_one.wait()
            await connection.execute(text(f"SELECT 1 FROM {table} WHERE k = {second} FOR UPDATE"))

    try:
        results = await asyncio.gather(lock(1, 2), lock(2, 1), return_exceptions=True)
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE {table}"))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results  # PostgreSQL breaks the cycle by failing one of the two
    assert _kinds(errors[0]) == (DbErrorKind.CONFLICT, False, True, True)


async def test_a_driver_stuck_after_the_server_left_is_unavailable_and_dropped(
    engine: AsyncEngine,
) -> None:
    # The hot paths' claim and outcome flush read this (``driver.after_failure``): asyncpg's
    # InternalClientError when a terminating server's error arrived while the connection sat
    # idle. Read as the request's fault, a worker's claim loop crashed instead of retrying.
    stuck = asyncpg.InternalClientError("cannot switch to state 11; another operation (2)")
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        raised = await after_failure(connection, driver, stuck)
        assert connection.invalidated
    assert _kinds(raised) == (DbErrorKind.UNAVAILABLE, True, True, True)
