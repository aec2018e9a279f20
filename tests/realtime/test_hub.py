"""``ConnectionHub.deliver``: every socket of the user gets the frame; a socket whose send fails
or hangs is dropped from the hub and closed (its client reconnects and gets the replay), and
does not hold up the others."""

from __future__ import annotations

import asyncio
import json

from notifier.realtime.hub import ConnectionHub


class Sink:
    def __init__(self, *, fail: bool = False, hang: bool = False) -> None:
        self.fail, self.hang = fail, hang
        self.frames: list[dict[str, object]] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None

    async def send_text(self, data: str) -> None:
        if self.fail:
            raise ConnectionResetError("gone")
        if self.hang:
            await asyncio.Event().wait()
        self.frames.append(json.loads(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code = code
        self.closed.set()


async def test_each_socket_of_the_user_gets_the_frame() -> None:
    hub = ConnectionHub()
    tab1, tab2, other = Sink(), Sink(), Sink()
    hub.add("u", tab1)
    hub.add("u", tab2)
    hub.add("u", tab2)  # added twice, held once
    hub.add("v", other)
    assert await hub.deliver("u", {"type": "x"}) == 2
    assert tab1.frames == tab2.frames == [{"type": "x"}]
    assert other.frames == []
    assert hub.connection_count == 3
    hub.discard("u", tab1)
    hub.discard("u", tab2)
    assert not hub.has_user("u")
    assert await hub.deliver("u", {"type": "x"}) == 0


async def test_a_failing_or_hanging_socket_is_dropped_and_closed() -> None:
    hub = ConnectionHub(send_timeout=0.05)
    good, failing, hanging = Sink(), Sink(fail=True), Sink(hang=True)
    for sink in (good, failing, hanging):
        hub.add("u", sink)
    assert await hub.deliver("u", {"type": "x"}) == 1
    assert good.frames == [{"type": "x"}]
    await asyncio.wait_for(asyncio.gather(failing.closed.wait(), hanging.closed.wait()), 5)
    assert failing.close_code == hanging.close_code == 1011
    assert hub.connection_count == 1


async def test_a_lone_failing_socket_leaves_the_user_out_of_the_hub() -> None:
    hub = ConnectionHub()
    failing = Sink(fail=True)
    hub.add("u", failing)
    assert await hub.deliver("u", {"type": "x"}) == 0
    assert not hub.has_user("u")
    await asyncio.wait_for(failing.closed.wait(), 5)
