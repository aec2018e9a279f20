"""``GET /v1/ws?token=``: a user's live connection (DESIGN "WebSocket").

On connect the socket joins this process's hub first and then replays the user's unacked
websocket notifications, oldest first, so nothing published in between is missed (a frame may
then arrive twice; clients de-duplicate by id). A client ``ack`` marks the channel delivered.
The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from notifier.api.context import ServiceContext
from notifier.auth import InvalidCredentials
from notifier.realtime.frames import notification_frame_for
from notifier.storage.realtime import acknowledge, unacked_websocket_notifications

router = APIRouter(tags=["websocket"])
log = logging.getLogger("notifier.api.ws")

CLOSE_UNAUTHORIZED = 4401


class SerializedSocket:
    """One writer at a time: the hub and the replay may both send to this socket."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._lock = asyncio.Lock()

    async def send_text(self, data: str) -> None:
        async with self._lock:
            await self._websocket.send_text(data)

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.send_text(json.dumps(frame, separators=(",", ":")))


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    context: ServiceContext = websocket.app.state.context
    await websocket.accept()
    try:
        user_id = context.tokens.verify(websocket.query_params.get("token", ""))
    except InvalidCredentials:
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="invalid or expired token")
        return
    sink = SerializedSocket(websocket)
    context.hub.add(user_id, sink)
    try:
        async with context.sessions() as session:
            for row in await unacked_websocket_notifications(session, user_id):
                await sink.send_json(notification_frame_for(row))
        while True:
            await _handle(context, sink, user_id, await websocket.receive_text())
    except WebSocketDisconnect:
        pass
    finally:
        context.hub.discard(user_id, sink)


async def _handle(context: ServiceContext, sink: SerializedSocket, user_id: str, text: str) -> None:
    try:
        frame = json.loads(text)
        kind = frame.get("type") if isinstance(frame, dict) else None
    except json.JSONDecodeError:
        kind, frame = None, {}
    if kind == "ping":
        await sink.send_json({"type": "pong"})
        return
    if kind != "ack":
        await sink.send_json(
            {
                "type": "error",
                "error": {"code": "bad_frame", "message": 'expected {"type": "ack", "id": "..."}'},
            }
        )
        return
    try:
        notification_id = uuid.UUID(str(frame.get("id")))
    except ValueError:
        await sink.send_json(
            {"type": "error", "error": {"code": "bad_frame", "message": "ack id is not a UUID"}}
        )
        return
    async with context.sessions() as session:
        await acknowledge(session, user_id, notification_id)
        await session.commit()
    with contextlib.suppress(Exception):
        await sink.send_json({"type": "acked", "id": str(notification_id)})
