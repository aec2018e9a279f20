"""An API process that falls behind the NATS server (a slow consumer: more frames waiting than
its subscription holds) loses the excess — NATS drops them — and then sends its connected
users their unacked websocket notifications again, as after a reconnect.

A real API (in this process, its subscription limit lowered to 10 messages), a real
dispatcher publishing through its own NATS connection, a real WebSocket client, and a burst of
500 frames from another process while this one is stalled. The stall is the fault itself: the
event loop is blocked for a moment, as a process starved of CPU would be."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import pytest
import websockets

from notifier.realtime import nats_broker
from tests.realtime.sockets import listening, next_frame, ws_url
from tests.support.nats import NATS_URL, require_nats
from tests.support.service import make_settings, running_service
from tests.support.worker import dispatcher_beside

pytestmark = pytest.mark.postgres

BURST = 500
# Another process publishes the burst: this one is stalled meanwhile.
PUBLISHER = """
import asyncio, json, sys
import nats

async def main():
    client = await nats.connect(sys.argv[1])
    body = json.dumps({"user_id": "someone-else", "frame": {"type": "notification"}}).encode()
    for _ in range(int(sys.argv[2])):
        await client.publish("notifier.frames", body)
    await client.flush()
    await client.close()

asyncio.run(main())
"""


async def test_a_listener_that_fell_behind_resends_the_unacked(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await require_nats()
    monkeypatch.setattr(nats_broker, "SUBSCRIPTION_MESSAGES", 10)
    settings = make_settings(pg_url, fanout_url=NATS_URL)
    async with running_service(settings) as service, dispatcher_beside(service):
        fanout = service.context.fanout
        assert isinstance(fanout, nats_broker.NatsFanout)
        await listening(service)
        user = f"slow-{uuid.uuid4().hex[:8]}"
        token = await service.user_token(user)
        async with websockets.connect(ws_url(service, token)) as socket:
            async with service.client() as client:
                created = await client.post(
                    "/v1/notifications",
                    json={"user_id": user, "title": "t", "message": "m", "channels": ["websocket"]},
                )
            assert created.status_code == 202, created.text
            first = await next_frame(socket, "notification")
            assert first["notification"]["id"] == created.json()["id"]
            # Not acked: it stays `sent`, what a re-send picks up.

            publisher = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PUBLISHER, NATS_URL, str(BURST)
            )
            time.sleep(2.0)  # noqa: ASYNC251 - the fault: this process stops reading for a while
            assert await asyncio.wait_for(publisher.wait(), 30) == 0

            again = await next_frame(socket, "notification")
            assert again["notification"]["id"] == first["notification"]["id"]
            assert fanout.dropped > 0  # NATS did drop frames: the re-send is why it came again
            await socket.send(json.dumps({"type": "ack", "id": again["notification"]["id"]}))
            assert (await next_frame(socket, "acked"))["id"] == again["notification"]["id"]
