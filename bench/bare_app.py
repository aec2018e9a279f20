"""``python -m bench.bare_app``: the baseline server of scenarios 2 and 4.

The service has no do-nothing endpoint, so this bench-only FastAPI app provides them, served by
uvicorn exactly as ``notifier serve`` serves the service (``notifier.api.server.build_server``:
same host/port settings, flags, WebSocket options, one process):

- ``POST /v1/notifications``: answers 202 with a constant JSON body (does not read the body);
- ``GET /readyz``;
- ``GET /v1/ws?user=``: accepts and holds the socket (like the service's, one task per socket
  reading client frames), nothing else;
- ``POST /bench/broadcast``: sends one notification frame to every open socket, concurrently,
  as the service's hub does; answers with how many it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

CONSTANT = {
    "id": "00000000-0000-0000-0000-000000000000",
    "user_id": "bench",
    "title": "Build finished",
    "message": "Your build #1234 finished successfully in 3m 12s.",
    "status": "pending",
}

app = FastAPI(title="bench-bare")
sockets: dict[WebSocket, str] = {}


@app.post("/v1/notifications", status_code=202)
async def enqueue() -> JSONResponse:
    return JSONResponse(CONSTANT, status_code=202)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.websocket("/v1/ws")
async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    sockets[websocket] = websocket.query_params.get("user", "")
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        sockets.pop(websocket, None)


@app.post("/bench/broadcast")
async def broadcast() -> dict[str, Any]:
    async def one(socket: WebSocket, user: str) -> bool:
        frame = {
            "type": "notification",
            "notification": {**CONSTANT, "id": str(uuid.uuid4()), "user_id": user},
        }
        try:
            await asyncio.wait_for(socket.send_text(json.dumps(frame, separators=(",", ":"))), 5)
        except Exception:
            return False
        return True

    sent = await asyncio.gather(*(one(s, u) for s, u in list(sockets.items())))
    return {"sent": sum(sent)}


async def _serve() -> None:
    from notifier.api.server import build_server
    from notifier.settings import Settings

    settings = Settings()  # NOTIFIER_HOST/PORT/LOG_LEVEL, as for `notifier serve`
    await build_server(app, settings).serve()


def main() -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
