"""``Coalescer``: concurrent submissions share a call, results go back to their own callers,
and a failing call fails only the callers of that batch."""

from __future__ import annotations

import asyncio

import pytest

from notifier.realtime.batching import Coalescer


async def test_concurrent_items_share_a_call_and_get_their_own_results() -> None:
    calls: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0)  # yield, as a database round trip would
        return [2 * i for i in items]

    coalescer: Coalescer[int, int] = Coalescer(double, max_batch=50)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(120)))
    assert results == [2 * i for i in range(120)]
    # All were submitted before the first call began: batches of 50 at most, in order.
    assert [len(c) for c in calls] == [50, 50, 20]
    assert [i for c in calls for i in c] == list(range(120))


async def test_a_failed_call_fails_its_batch_only() -> None:
    async def handle(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if 3 in items:
            raise ValueError("bad batch")
        return items

    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=2)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(6)), return_exceptions=True)
    assert results[0] == 0
    assert [type(r) for r in results[1:]] == [int, ValueError, ValueError, int, int]
    assert await coalescer.submit(7) == 7  # not stuck after a failure


async def test_cancelling_a_caller_leaves_the_others() -> None:
    gate = asyncio.Event()

    async def handle(items: list[int]) -> list[int]:
        await gate.wait()
        return items

    coalescer: Coalescer[int, int] = Coalescer(handle)
    first = asyncio.create_task(coalescer.submit(1))
    second = asyncio.create_task(coalescer.submit(2))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == 2
    with pytest.raises(asyncio.CancelledError):
        await first
