"""User tokens never show up in the server's log output.

Every logger is captured at DEBUG, uvicorn's included (its loggers do not propagate to the root,
so the capture handler is attached to them directly, which also makes uvicorn write its access
log, off by default). uvicorn logs each WebSocket handshake with its
query string on ``uvicorn.error`` at INFO whatever the access log setting, so ``?token=`` is
exactly what would leak.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.faults.processes import ServiceProcess
from tests.security.conftest import forged_tokens, next_frame, ws_url
from tests.security.serve import API_KEY, api_process
from tests.support.service import RunningService

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# This test's own clients log what they send; they are not the server.
CLIENT_LOGGERS = ("httpx", "httpcore", "websockets.client")


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    saved = []
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        for logger, level in saved:
            logger.removeHandler(caplog.handler)
            logger.setLevel(level)


async def test_tokens_never_reach_the_logs(
    service: RunningService, all_logs: pytest.LogCaptureFixture
) -> None:
    assert service.app is not None
    user = "log-user"
    token = await service.user_token(user)
    forged = forged_tokens(service, user)["expired"]

    async with service.client(token) as client:
        assert (await client.get(f"/v1/users/{user}/notifications")).status_code == 200
        assert (await client.get("/v1/users/someone-else/notifications")).status_code == 404
        # A careless client putting the token in a URL.
        assert (
            await client.get(f"/v1/users/{user}/notifications", params={"token": token})
        ).status_code == 200
    async with service.client(forged) as client:
        assert (await client.get(f"/v1/users/{user}/notifications")).status_code == 401

    # A client that also sends the token as a header (the websockets library logs handshake
    # headers at DEBUG).
    bearer = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(ws_url(service, token), additional_headers=bearer) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        await next_frame(socket, "pong")
        await socket.send("not json")
        await next_frame(socket, "error")
    async with websockets.connect(ws_url(service, forged)) as socket:
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()

    text = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}"
        for r in all_logs.records
        if not r.name.startswith(CLIENT_LOGGERS)
    )
    # The capture works: uvicorn did log the handshakes and the requests...
    assert "WebSocket /v1/ws" in text, text
    assert f"/v1/users/{user}/notifications" in text, text
    # ...without a token, or a piece of one long enough to replay.
    secrets = (token, forged, *token.split(".")[1:], *forged.split(".")[1:], service.api_key)
    for secret in secrets:
        assert secret not in text, f"a token leaked into the logs:\n{text}"


async def test_the_access_log_is_opt_in_and_never_shows_a_token(tmp_path: Path) -> None:
    """A real `notifier serve`: no access log by default; with NOTIFIER_ACCESS_LOG=true one line
    a request, the WebSocket's ``?token=`` and a careless HTTP ``?token=`` redacted, the
    Authorization header never printed (uvicorn's access log has no headers)."""

    async def traffic(api: ServiceProcess) -> str:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            producer = {"Authorization": f"Bearer {API_KEY}"}
            token = (await client.post("/v1/users/al/tokens", headers=producer)).json()["token"]
            user = {"Authorization": f"Bearer {token}"}
            inbox = "/v1/users/al/notifications"
            assert (await client.get(inbox, headers=user)).status_code == 200
            assert (
                await client.get(inbox, headers=user, params={"token": token})
            ).status_code == 200
            assert (
                await client.get(inbox, headers=user, params={"Token": token})
            ).status_code == 200
        async with websockets.connect(f"{api.ws_base}/v1/ws?token={token}") as socket:
            await socket.send(json.dumps({"type": "ping"}))
            await next_frame(socket, "pong")
        return token

    async with api_process(tmp_path / "default", log_level="info") as quiet:
        await traffic(quiet)
    assert '"GET /v1/users/al/notifications' not in quiet.log_path.read_text()

    async with api_process(tmp_path / "on", access_log=True, log_level="warning") as api:
        token = await traffic(api)
    log = api.log_path.read_text()
    assert '"GET /v1/users/al/notifications HTTP/1.1" 200' in log, log
    assert '"GET /v1/users/al/notifications?token=[redacted] HTTP/1.1" 200' in log, log
    assert '"POST /v1/users/al/tokens HTTP/1.1" 201' in log, log
    for secret in (token, *token.split(".")[1:], API_KEY):
        assert secret not in log, f"a secret reached the access log:\n{log}"
