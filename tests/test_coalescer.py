"""``notifier/coalescer.py``: concurrent submissions share a call and results go back to their
own callers; a batch ends on size or on time; each failure policy (FAIL, SPLIT, RETRY); the
bounded queue; urgent items first. Pure asyncio: the "database" is a function that records
its calls, and events (not sleeps) order the steps."""

from __future__ import annotations

import asyncio

import pytest

from notifier.coalescer import Coalescer, OnFailure


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


class Recorder:
    """A ``handle`` that records its batches and can be held at a gate."""

    def __init__(self, fail_on: set[int] | None = None, failures: int = 0) -> None:
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail_on = fail_on or set()
        self.failures = failures  # the first this many calls raise ConnectionError

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.entered.set()
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database restarting")
        if self.fail_on & set(items):
            raise ValueError(f"bad item in {items}")
        return [i * 10 for i in items]


async def test_a_full_batch_is_handled_at_once_even_with_max_wait() -> None:
    handle = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=4, max_wait=60.0)
    # max_wait of a minute: only the size flush can end this test in time.
    results = await asyncio.wait_for(asyncio.gather(*(coalescer.submit(i) for i in range(8))), 5)
    assert results == [i * 10 for i in range(8)]
    assert handle.calls == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_a_partial_batch_is_handled_after_max_wait() -> None:
    handle = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=100, max_wait=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalescer.submit(2))  # joins while the first waits to fill
    assert await first == 10 and await second == 20
    assert handle.calls == [[1, 2]]  # one call for both: the time flush, not one each
    assert loop.time() - started >= 0.05


async def test_hurry_starts_the_gathering_batch_and_the_next_one_waits_again() -> None:
    handle = Recorder()
    # max_wait of a minute: only hurry can end this test in time.
    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=100, max_wait=60.0)
    first = coalescer.submit_nowait(1)
    second = coalescer.submit_nowait(2)
    await asyncio.sleep(0)  # the batch is gathering
    coalescer.hurry()
    assert await asyncio.wait_for(asyncio.gather(first, second), 5) == [10, 20]
    assert handle.calls == [[1, 2]]
    # The queue was left empty: the next batch gathers for its max_wait again.
    third = coalescer.submit_nowait(3)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(third), 0.2)
    coalescer.hurry()
    assert await asyncio.wait_for(third, 5) == 30


async def test_hurry_before_the_items_arrive_spares_them_the_wait() -> None:
    """A stopping sender hurries, then hands over its last outcomes."""
    handle = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=100, max_wait=60.0)
    coalescer.hurry()
    results = await asyncio.wait_for(asyncio.gather(*(coalescer.submit(i) for i in range(3))), 5)
    assert results == [0, 10, 20] and handle.calls == [[0, 1, 2]]


async def test_weight_counts_toward_max_batch() -> None:
    handle = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=10, weight=lambda i: i)
    await asyncio.gather(*(coalescer.submit(i) for i in (4, 5, 6, 3, 1)))
    assert handle.calls == [[4, 5], [6, 3, 1]]


async def test_fail_gives_every_caller_of_the_batch_the_error() -> None:
    handle = Recorder(fail_on={2})
    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=4, on_failure=OnFailure.FAIL)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(4)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert handle.calls == [[0, 1, 2, 3]]


async def test_split_finds_the_poison_and_fails_it_alone() -> None:
    handle = Recorder(fail_on={5})
    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=8, on_failure=OnFailure.SPLIT)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(8)), return_exceptions=True)
    assert [type(r) for r in results] == [int] * 5 + [ValueError] + [int] * 2
    assert results[:5] == [0, 10, 20, 30, 40] and results[6:] == [60, 70]
    # Halves, not one by one: 8 -> 4+4 -> 2+2 -> 1+1.
    assert handle.calls == [
        list(range(8)), [0, 1, 2, 3], [4, 5, 6, 7], [4, 5], [4], [5], [6, 7],
    ]  # fmt: skip


async def test_retry_outlasts_a_brief_failure() -> None:
    handle = Recorder(failures=2)
    coalescer: Coalescer[int, int] = Coalescer(
        handle, on_failure=OnFailure.RETRY, retry_delays=(0.01, 0.01, 0.01)
    )
    assert await asyncio.gather(coalescer.submit(1), coalescer.submit(2)) == [10, 20]
    assert handle.calls == [[1, 2]] * 3


async def test_retry_gives_up_after_its_delays() -> None:
    handle = Recorder(failures=10)
    coalescer: Coalescer[int, int] = Coalescer(
        handle, on_failure=OnFailure.RETRY, retry_delays=(0.01, 0.01)
    )
    with pytest.raises(ConnectionError):
        await coalescer.submit(1)
    assert len(handle.calls) == 3  # the try and one per delay


async def test_the_policy_may_depend_on_the_error() -> None:
    # The batchers' usual rule: an outage fails the batch, anything else is split.
    def policy(exc: Exception) -> OnFailure:
        return OnFailure.FAIL if isinstance(exc, ConnectionError) else OnFailure.SPLIT

    handle = Recorder(fail_on={1})
    coalescer: Coalescer[int, int] = Coalescer(handle, on_failure=policy)
    results = await asyncio.gather(coalescer.submit(0), coalescer.submit(1), return_exceptions=True)
    assert results[0] == 0 and isinstance(results[1], ValueError)
    outage = Recorder(failures=1)
    coalescer = Coalescer(outage, on_failure=policy)
    results = await asyncio.gather(coalescer.submit(0), coalescer.submit(1), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert outage.calls == [[0, 1]]  # not split: splitting an outage only multiplies it


async def test_the_queue_is_bounded() -> None:
    handle = Recorder()
    handle.gate.clear()
    coalescer: Coalescer[int, int] = Coalescer(handle, max_batch=2, max_pending=3)
    first = asyncio.create_task(coalescer.submit(0))
    await handle.entered.wait()  # [0] is in the handle, held at the gate
    queued = [asyncio.create_task(coalescer.submit(i)) for i in range(1, 6)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert coalescer.pending == 3  # 1, 2, 3 queued; 4 and 5 wait for room
    handle.gate.set()
    assert await first == 0
    assert await asyncio.gather(*queued) == [10, 20, 30, 40, 50]
    assert max(len(c) for c in handle.calls) <= 2


async def test_urgent_items_go_first_and_may_open_a_lane() -> None:
    handle = Recorder()
    handle.gate.clear()
    coalescer: Coalescer[int, int] = Coalescer(
        handle, max_batch=10, urgent=lambda i: i >= 100, urgent_lane=True
    )
    slow = asyncio.create_task(coalescer.submit(1))  # a batch of non-urgent items, held
    await handle.entered.wait()
    later = [asyncio.create_task(coalescer.submit(i)) for i in (2, 3)]
    urgent = asyncio.create_task(coalescer.submit(100))
    for _ in range(3):
        await asyncio.sleep(0)
    # The urgent item did not wait for the held batch: it opened a lane of its own, and took
    # the items queued behind it along.
    assert handle.calls == [[1], [100, 2, 3]]
    handle.gate.set()
    assert await urgent == 1000 and await slow == 10
    assert await asyncio.gather(*later) == [20, 30]


async def test_flushed_waits_for_everything_submitted() -> None:
    handle = Recorder()
    handle.gate.clear()
    coalescer: Coalescer[int, int] = Coalescer(handle)
    task = asyncio.create_task(coalescer.submit(1))
    await handle.entered.wait()
    task.cancel()  # the caller gives up: the item is handled all the same
    flushed = asyncio.create_task(coalescer.flushed())
    await asyncio.sleep(0)
    assert not flushed.done()
    handle.gate.set()
    await flushed
    assert handle.calls == [[1]] and coalescer.batches_handled == 1
