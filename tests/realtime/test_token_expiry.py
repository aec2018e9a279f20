"""An open WebSocket does not outlive its token: it is closed with 4401 when the token expires
(docs/architecture.md, "WebSocket"), and no frame reaches it after that.

Reproduced on 02f835d: the token was checked only at connect; 75 s after a 60 s token expired,
HTTP answered 401 and the socket still received notifications. Here the token is minted with a
2-second lifetime by the service's own ``UserTokens`` (the API's minimum is 60 s), against a
real uvicorn server and a real WebSocket client, on both databases.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import websockets
from websockets.exceptions import ConnectionClosed

from notifier.models.base import utcnow
from tests.realtime.sockets import listening, next_frame, ws_url
from tests.support.service import RunningService

TTL_SECONDS = 2


async def test_the_socket_is_closed_with_4401_when_its_token_expires(
    service: RunningService,
) -> None:
    await listening(service)
    user, task_id = f"exp-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    minted = service.context.tokens.mint(user, ttl_seconds=TTL_SECONDS)
    async with websockets.connect(ws_url(service, minted.token)) as socket:
        # Live while the token is valid.
        async with service.client() as client:
            body = {"task_id": task_id, "user_id": user, "task_type": "sync"}
            assert (await client.post("/v1/tasks", json=body)).status_code == 201
            running = await client.patch(f"/v1/tasks/{task_id}", json={"status": "running"})
            assert running.status_code == 200
        assert (await next_frame(socket, "task_progress"))["task"]["task_id"] == task_id

        left = (minted.expires_at - utcnow()).total_seconds()
        started = time.monotonic()
        try:
            # Nothing more is sent to this socket; the next thing it sees is the close.
            frame = await asyncio.wait_for(socket.recv(), left + 3)
            raise AssertionError(f"a frame instead of the close: {frame}")
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4401, closed
        waited = time.monotonic() - started
    # At the expiry, not before it and not long after.
    assert left - 0.2 <= waited <= left + 1.0, (left, waited)

    # The socket and HTTP agree: the token is no longer good for either.
    async with service.client(token=minted.token) as client:
        assert (await client.get(f"/v1/users/{user}/notifications")).status_code == 401
    try:
        async with websockets.connect(ws_url(service, minted.token)) as again:
            await again.recv()
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4401
    else:
        raise AssertionError("an expired token opened a socket")
