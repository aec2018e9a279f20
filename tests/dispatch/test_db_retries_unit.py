"""``with_db_retries``: the first try outside Tenacity must not change what is retried, for how
long, or which error comes out; only what a first-time success costs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import exc as sa_exc

from workers.outcomes import with_db_retries


def _transient() -> Exception:
    return sa_exc.OperationalError("UPDATE …", None, ConnectionResetError())


class Scripted:
    """Each call answers with the next of ``replies``: an exception to raise, or a value."""

    def __init__(self, replies: Iterator[object]) -> None:
        self.replies = replies
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        reply = next(self.replies)
        if isinstance(reply, Exception):
            raise reply
        return reply


async def test_a_first_time_success_is_returned_after_one_call() -> None:
    operation = Scripted(iter(["done"]))
    assert await with_db_retries(operation, within=5.0) == "done"
    assert operation.calls == 1


async def test_transient_errors_are_retried_until_the_operation_succeeds() -> None:
    operation = Scripted(iter([_transient(), _transient(), "done"]))
    assert await with_db_retries(operation, within=5.0) == "done"
    assert operation.calls == 3


async def test_any_other_error_is_raised_at_once() -> None:
    operation = Scripted(iter([ValueError("bad row")]))
    with pytest.raises(ValueError, match="bad row"):
        await with_db_retries(operation, within=5.0)
    assert operation.calls == 1


async def test_a_non_transient_error_after_a_transient_one_ends_the_retries() -> None:
    operation = Scripted(iter([_transient(), ValueError("bad row")]))
    with pytest.raises(ValueError, match="bad row"):
        await with_db_retries(operation, within=5.0)
    assert operation.calls == 2


async def test_the_retries_stop_at_the_deadline_counted_from_the_first_try() -> None:
    errors = (_transient() for _ in range(1000))
    operation = Scripted(errors)
    started = time.monotonic()
    with pytest.raises(sa_exc.OperationalError):
        await with_db_retries(operation, within=0.3)
    elapsed = time.monotonic() - started
    assert operation.calls > 1
    # The last wait may start just before the deadline: at most one wait (<= 1.05 s) past it.
    assert 0.3 <= elapsed < 0.3 + 1.1


async def test_no_time_left_means_the_first_error_is_raised_without_a_retry() -> None:
    operation = Scripted(iter([_transient(), "done"]))
    with pytest.raises(sa_exc.OperationalError):
        await with_db_retries(operation, within=0.0)
    assert operation.calls == 1
