"""The fast path's frame across API processes: enqueued on one, delivered on another once (over
PostgreSQL NOTIFY and NATS), never twice on the publisher; the broker's message as the frame
was."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import websockets

from notifier.realtime.fanout import FrameForwarder, fanout_payload
from notifier.realtime.hub import ConnectionHub
from tests.realtime.fast_path import enqueue
from tests.realtime.sockets import listening, next_frame, ws_url
from tests.support.nats import NATS_URL, require_nats
from tests.support.service import RunningService, make_settings, running_service


@pytest.fixture(params=["notify", "nats"])
async def two_instances(
    request: pytest.FixtureRequest, pg_url: str
) -> AsyncIterator[tuple[RunningService, RunningService]]:
    """Two API processes' worth of services on one database, as two `notifier serve` are."""
    fanout_url = NATS_URL if request.param == "nats" else None
    if fanout_url is not None:
        await require_nats(fanout_url)
    first = make_settings(pg_url, fanout_url=fanout_url)
    second = make_settings(
        pg_url,
        fanout_url=fanout_url,
        api_keys=",".join(k.get_secret_value() for k in first.api_keys),
        token_secret=first.token_secret.get_secret_value() if first.token_secret else None,
    )
    async with running_service(first) as a, running_service(second) as b:
        await listening(a)
        await listening(b)
        yield a, b


@pytest.mark.postgres
async def test_another_instance_forwards_the_frame_once(
    two_instances: tuple[RunningService, RunningService],
) -> None:
    """Enqueued on A, the socket on B: the frame crosses (on NOTIFY, in the enqueue's own
    transaction). A socket on A gets it from A's hub directly, and once: A's listener skips
    the copy A published."""
    a, b = two_instances
    user = f"fast-{uuid.uuid4().hex[:8]}"
    token = await a.user_token(user)
    async with (
        websockets.connect(ws_url(b, token)) as on_b,
        websockets.connect(ws_url(a, token)) as on_a,
    ):
        first = await enqueue(a, "/v1/notifications", {"user_id": user, "title": "x",
                                                        "message": "m"})  # fmt: skip
        second = await enqueue(a, "/v1/notifications", {"user_id": user, "title": "y",
                                                         "message": "m"})  # fmt: skip
        for socket in (on_b, on_a):
            got = [(await next_frame(socket, "notification"))["notification"]["id"]
                   for _ in range(2)]  # fmt: skip
            assert got == [first["id"], second["id"]]
        # Nothing more on A: a ping's answer comes before any late copy of either frame would.
        await on_a.send(json.dumps({"type": "ping"}))
        frame = json.loads(await asyncio.wait_for(on_a.recv(), 10))
        assert frame["type"] == "pong", frame


def test_a_listener_skips_what_its_own_process_published() -> None:
    async def run() -> list[str]:
        hub, delivered = ConnectionHub(), []

        class Sink:
            async def send_text(self, data: str) -> None:
                delivered.append(json.loads(data)["notification"]["id"])

        hub.add("u", Sink())
        forwarder = FrameForwarder(hub, load_frame=None)  # type: ignore[arg-type]
        frame = {"type": "notification", "notification": {"id": "mine"}}
        forwarder.forward(fanout_payload("u", frame, origin=hub.origin))
        other = {"type": "notification", "notification": {"id": "theirs"}}
        forwarder.forward(fanout_payload("u", other, origin="another-process"))
        await asyncio.sleep(0)  # deliver_soon's task: one turn of the loop
        await asyncio.sleep(0)
        return delivered

    assert asyncio.run(run()) == ["theirs"]


def test_a_frame_reads_back_as_it_was_whatever_its_values() -> None:
    """The broker's message (orjson, json for what orjson refuses) carries the frame as it was:
    non-ASCII text, a quote, an integer beyond 64 bits."""
    for metadata in ({"name": 'Zoë "Z"', "n": 1}, {"big": 2**70, "name": "é"}):
        frame = {"type": "notification", "notification": {"id": "x", "metadata": metadata}}
        message = json.loads(fanout_payload("u", frame, origin="o"))
        assert message == {"origin": "o", "user_id": "u", "frame": frame}
