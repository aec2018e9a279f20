"""What the realtime tests share: a user's socket URL on a running service, and reading frames
of one kind off a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from tests.support.service import RunningService


def ws_url(service: RunningService, token: str) -> str:
    return f"ws://{service.settings.host}:{service.settings.port}/v1/ws?token={token}"


async def listening(service: RunningService) -> None:
    """On PostgreSQL frames reach sockets through the LISTEN connection: wait until it is up."""
    if service.context.listener is not None:
        await asyncio.wait_for(service.context.listener.listening.wait(), 10)


async def next_frame(socket: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind`` (within 10 s); frames of other types are passed over."""
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame["type"] == kind:
            return dict(frame)
