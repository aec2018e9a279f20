"""``GET /v1/ws?token=``: a user's live connection (docs/architecture.md, "WebSocket").

On connect the socket joins this process's hub first and then replays the user's unacked
websocket notifications, oldest first, so nothing published in between is missed (a frame may
then arrive twice; clients de-duplicate by id). A client ``ack`` marks the channel delivered
and is answered with what it did; acks are bounded per socket (``realtime/acks.py``).
When the token expires the socket is closed with 4401, as a bad token is at connect: the
client reconnects with a fresh one. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.datastructures import State
from starlette.websockets import WebSocketDisconnected

from notifier.api.context import ServiceContext
from notifier.api.redaction import original_query_string
from notifier.auth import InvalidCredentials
from notifier.coalescer import Coalescer, OnFailure
from notifier.models.base import utcnow
from notifier.realtime.acks import CLOSE_POLICY_VIOLATION, AckLimits, SocketAcks
from notifier.realtime.frames import notification_frame_for
from notifier.realtime.hub import ConnectionHub
from notifier.storage.realtime import AckOutcome, acknowledge_many, unacked_for_users

router = APIRouter(tags=["websocket"])
log = logging.getLogger("notifier.api.ws")

CLOSE_UNAUTHORIZED = 4401
# How long an ack waits for others to share its transaction (its answer is that much later;
# the republish it prevents is seconds away).
ACK_BATCH_WAIT = 0.02

# The answer to an ack that recorded nothing: an error frame naming the ack's id.
_NOT_RECORDED = {
    AckOutcome.NOT_FOUND: ("not_found", "no notification of yours has this id; nothing recorded"),
    AckOutcome.NOT_ACKABLE: (
        "not_ackable",
        "this notification has no websocket delivery waiting for an ack; nothing recorded",
    ),
}


class SocketQueries:
    """The database work of all this app's sockets, coalesced (``Coalescer``): a wave of
    connects costs one replay query per batch, and the acks that follow a fan-out one
    transaction per batch, instead of a pooled connection and a transaction per socket."""

    def __init__(self, context: ServiceContext) -> None:
        self._context = context
        self.replay: Coalescer[str, list[dict[str, Any]]] = Coalescer(self._replay)
        # Acks come in bursts after a fan-out (one per socket per frame): a few transactions
        # at a time keep up with them, each locking its rows in id order (no lock cycles).
        # A batch that fails (one bad ack, or a lock cycle with a worker) is split down to the
        # ack at fault: only that one fails. A steady stream (500 frames/s, each acked) came
        # in batches of one or two, 4-5 round trips each; a batch waits up to
        # ``ACK_BATCH_WAIT`` for more, for the API's loop that the enqueues and frames share.
        self.ack: Coalescer[tuple[str, uuid.UUID], AckOutcome] = Coalescer(
            self._ack, concurrency=4, on_failure=OnFailure.SPLIT, max_wait=ACK_BATCH_WAIT
        )
        self.ack_limits = AckLimits.from_settings(context.settings)
        self._acking: set[asyncio.Task[None]] = set()

    @staticmethod
    def of(state: State, context: ServiceContext) -> SocketQueries:
        queries = getattr(state, "socket_queries", None)
        if not isinstance(queries, SocketQueries):
            queries = state.socket_queries = SocketQueries(context)
        return queries

    @property
    def acks_in_flight(self) -> int:
        """Acks of all this app's sockets being recorded now (each bounded per socket)."""
        return len(self._acking)

    def acknowledge_soon(
        self, websocket: WebSocket, user_id: str, notification_id: uuid.UUID, acks: SocketAcks
    ) -> None:
        """Record the ack, then answer it, off the socket's read loop: a loop that waited for
        the database would stop reading the socket under load, and with it the pongs to the
        server's keepalive pings (every socket closed "keepalive ping timeout"; bench
        scenario 3). ``acks`` counts it in flight until answered. A client whose ack is lost
        gets the notification again on reconnect."""
        acks.started()
        task = asyncio.get_running_loop().create_task(
            self._acknowledge(websocket, user_id, notification_id)
        )
        self._acking.add(task)
        task.add_done_callback(self._acking.discard)
        task.add_done_callback(lambda _: acks.finished())

    async def _acknowledge(
        self, websocket: WebSocket, user_id: str, notification_id: uuid.UUID
    ) -> None:
        ident = str(notification_id)
        try:
            outcome = await self.ack.submit((user_id, notification_id))
        except Exception as exc:
            log.warning("could not record an ack: %s", type(exc).__name__)
            frame = _error("ack_failed", "ack not recorded; send it again", ident)
        else:
            # A repeat of one's own ack is answered `acked` again: acks are idempotent.
            not_recorded = _NOT_RECORDED.get(outcome)
            frame = (
                {"type": "acked", "id": ident}
                if not_recorded is None
                else _error(*not_recorded, ident)
            )
        with contextlib.suppress(Exception):  # the socket may have closed meanwhile
            await _send_json(websocket, frame)

    async def _replay(self, users: list[str]) -> list[list[dict[str, Any]]]:
        async with self._context.sessions() as session:
            found = await unacked_for_users(session, users)
            return [[notification_frame_for(row) for row in found.get(u, ())] for u in users]

    async def _ack(self, acks: list[tuple[str, uuid.UUID]]) -> list[AckOutcome]:
        async with self._context.sessions() as session:
            settled = await acknowledge_many(session, acks, self._context.wakeups)
            await session.commit()
            return settled


async def websocket_endpoint(websocket: WebSocket) -> None:
    context: ServiceContext = websocket.app.state.context
    await websocket.accept()
    try:
        user_id, expires_at = context.tokens.verify_until(_token(websocket))
    except InvalidCredentials:
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="invalid or expired token")
        return
    queries = SocketQueries.of(websocket.app.state, context)
    # The socket itself is the hub's sink: uvicorn writes each frame whole, so the hub and the
    # replay may send at the same time without a lock of ours.
    context.hub.add(user_id, websocket)
    expiry = _close_when_expired(context.hub, user_id, websocket, expires_at)
    del expires_at  # the timer has it; not kept in this frame for the socket's life
    acks = SocketAcks(queries.ack_limits)
    try:
        for frame in await queries.replay.submit(user_id):
            await _send_json(websocket, frame)
        while await _handle(queries, websocket, user_id, acks, await websocket.receive_text()):
            pass
    except (WebSocketDisconnect, WebSocketDisconnected):
        # WebSocketDisconnected: a send (the hub's, on another task) found the client gone.
        pass
    finally:
        expiry.cancel()
        context.hub.discard(user_id, websocket)


PATH = "/v1/ws"
# A plain Starlette route, not FastAPI's: this endpoint has no dependencies to solve, and
# FastAPI's would keep two exit stacks (deques of 600 bytes each) per open socket; 10k sockets
# are held at once (bench/RESULTS.md, scenario 4). ``NotifierApp`` (api/app.py) sends this
# path here directly, past the HTTP middleware; the route stays in the route table all the same.
router.add_websocket_route(PATH, websocket_endpoint)


def _close_when_expired(
    hub: ConnectionHub, user_id: str, websocket: WebSocket, expires_at: datetime
) -> asyncio.TimerHandle:
    """Close the socket with 4401 when its token expires. A timer on the loop's heap (about
    200 bytes with its arguments), not a task per socket: 10k sockets are held at once. All
    the timers share one empty context instead of a copy each (the callback reads none)."""
    loop = asyncio.get_running_loop()
    left = (expires_at - utcnow()).total_seconds()
    return loop.call_at(
        loop.time() + left, _token_expired, hub, user_id, websocket, context=_TIMER_CONTEXT
    )


_TIMER_CONTEXT = contextvars.Context()


def _token_expired(hub: ConnectionHub, user_id: str, websocket: WebSocket) -> None:
    # Out of the hub at once: no frame reaches the socket after its token expired.
    hub.drop(user_id, websocket, code=CLOSE_UNAUTHORIZED, reason="token expired")


def _token(websocket: WebSocket) -> str:
    # Parsed here rather than through ``websocket.query_params``, which would keep the parsed
    # query on the socket for as long as it stays open.
    query = original_query_string(websocket.scope)
    tokens = parse_qs(query.decode("latin-1")).get("token", [""])
    return tokens[0]


async def _send_json(websocket: WebSocket, frame: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(frame, separators=(",", ":")))


def _error(code: str, message: str, ident: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "error": {"code": code, "message": message}}
    if ident is not None:
        frame["id"] = ident
    return frame


async def _handle(
    queries: SocketQueries, websocket: WebSocket, user_id: str, acks: SocketAcks, text: str
) -> bool:
    """Answer one client frame; False once the socket was closed for sending too many acks."""
    try:
        frame = json.loads(text)
        kind = frame.get("type") if isinstance(frame, dict) else None
    except json.JSONDecodeError:
        kind, frame = None, {}
    if kind == "ping":
        await _send_json(websocket, {"type": "pong"})
        return True
    if kind != "ack":
        await _send_json(websocket, _error("bad_frame", 'expected {"type": "ack", "id": "..."}'))
        return True
    if not acks.take():
        log.info("closing a websocket that sent acks faster than allowed")
        await websocket.close(code=CLOSE_POLICY_VIOLATION, reason="too many acks")
        return False
    try:
        notification_id = uuid.UUID(str(frame.get("id")))
    except ValueError:
        await _send_json(websocket, _error("bad_frame", "ack id is not a UUID"))
        return True
    await acks.room()  # at most ws_acks_in_flight of this socket's acks wait for the database
    queries.acknowledge_soon(websocket, user_id, notification_id, acks)
    return True
