"""The outcome writer when a flush fails, on SQLite and PostgreSQL: a transient error retries the
whole flush, written once; a bad item fails alone, alone in a group too, and keeps its lease."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.storage.outcome_batch import ChannelOutcome
from tests.dispatch.outcome_db import (
    WORKER,
    Db,
    as_async,
    counting_db,
    delivery,
    mentions,
    writes_channels,
)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Db]:
    async with counting_db(db_url) as opened:
        yield opened


async def test_a_transient_error_retries_the_whole_flush(db: Db) -> None:
    ids = [await db.leased(["email"]) for _ in range(5)]
    writer = db.writer()
    failures = iter([sa_exc.OperationalError("UPDATE …", None, ConnectionResetError())])

    def once(statement: str, _parameters: Any) -> BaseException | None:
        return next(failures, None) if writes_channels(statement) else None

    # A serialization failure, once: a lost race, which the flush runs again.
    async with (
        db.refusing(sqlstate="40001", times=1) if db.is_postgres else as_async(db.failing(once))
    ):
        results = await asyncio.gather(
            *(
                writer.record(i, "email", ChannelChange(ChannelEvent.DELIVERED, 1), release=True)
                for i in ids
            )
        )

    assert results == [True] * 5
    for notification_id in ids:
        row = await db.row(notification_id)
        # Written once: the failed attempt was rolled back, not half-applied.
        assert (row.status, delivery(row, "email")["attempts"]) == ("delivered", 1)


async def test_a_bad_item_fails_alone(db: Db) -> None:
    good = [await db.leased(["email"]) for _ in range(3)]
    bad = await db.leased(["email"])
    writer = db.writer()

    def on_bad(statement: str, parameters: Any) -> BaseException | None:
        if writes_channels(statement) and mentions(parameters, bad):
            return sa_exc.IntegrityError(statement, None, ValueError("refused"))
        return None

    # A check violation from the server (PostgreSQL), as a bad value would raise.
    async with (
        db.refusing(notification_id=bad, sqlstate="23514")
        if db.is_postgres
        else as_async(db.failing(on_bad))
    ):
        results = await asyncio.gather(
            *(
                writer.record(i, "email", ChannelChange(ChannelEvent.DELIVERED, 1), release=True)
                for i in [*good, bad]
            ),
            return_exceptions=True,
        )

    assert results[:3] == [True, True, True]
    assert isinstance(results[3], sa_exc.IntegrityError)
    for notification_id in good:
        assert (await db.row(notification_id)).status == "delivered"
    unrecorded = await db.row(bad)
    assert (unrecorded.status, unrecorded.lease_owner) == ("dispatching", WORKER)


async def test_a_bad_item_of_a_group_fails_alone_and_keeps_its_lease(db: Db) -> None:
    """``record_many`` (a claimed batch's outcomes, one caller): the bad item's notification
    keeps its lease, its later outcomes (the release with them) are not written; the others'
    are recorded and released."""
    good = [await db.leased(["email", "websocket"]) for _ in range(2)]
    bad = await db.leased(["email", "websocket"])
    writer = db.writer()

    def on_bad(statement: str, parameters: Any) -> BaseException | None:
        if writes_channels(statement) and mentions(parameters, bad):
            return sa_exc.IntegrityError(statement, None, ValueError("refused"))
        return None

    def outcomes(notification_id: uuid.UUID) -> list[ChannelOutcome]:
        sent = ChannelChange(ChannelEvent.SENT, 1)
        return [
            ChannelOutcome(notification_id, "email", ChannelChange(ChannelEvent.DELIVERED, 1)),
            ChannelOutcome(notification_id, "websocket", sent, release=True),
        ]

    async with (
        db.refusing(notification_id=bad, sqlstate="23514")
        if db.is_postgres
        else as_async(db.failing(on_bad))
    ):
        results = await writer.record_many([*outcomes(good[0]), *outcomes(bad), *outcomes(good[1])])

    assert results[:2] == [True, True] and results[4:] == [True, True]
    assert all(isinstance(result, Exception) for result in results[2:4])
    for notification_id in good:
        row = await db.row(notification_id)
        assert (row.status, row.lease_owner) == ("delivered", None)
    unrecorded = await db.row(bad)
    assert (unrecorded.status, unrecorded.lease_owner) == ("dispatching", WORKER)
    assert {d.status for d in unrecorded.deliveries} == {"pending"}
