"""Writes that may race another request's first write of the same row: ``first_write_wins``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


async def first_write_wins(session: AsyncSession, write: Callable[[], Awaitable[T]]) -> T:
    """Run ``write`` (it finds the row or adds it) and commit. Two first writes of one row may
    both find none and both insert: the loser's commit meets the unique key, and it goes round
    once more, now finding and updating the winner's row."""
    for attempt in (1, 2):
        result = await write()
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            if attempt == 2:
                raise
            continue
        return result
    raise AssertionError("unreachable")
