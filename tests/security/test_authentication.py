"""Who may call what. The operations come from the service's own OpenAPI document, so a new
endpoint is covered the day it is added: without a credential it must answer 401, unless it is
one of the few public ones; every forged or stale user token is refused on every operation and
on the WebSocket."""

from __future__ import annotations

import httpx
import pytest
import websockets

from tests.security.conftest import (
    FORGED_KINDS,
    PUBLIC_PATHS,
    SIGNED_PATHS,
    assert_envelope,
    documented_operations,
    forged_tokens,
    ws_url,
)
from tests.support.service import RunningService


async def test_the_document_lists_the_operations_we_know(service: RunningService) -> None:
    """Guards the tests below against an empty or unreadable document."""
    operations = {str(op) for op in await documented_operations(service)}
    assert {"POST /v1/notifications", "GET /v1/tasks/{task_id}", "GET /healthz"} <= operations
    assert len(operations) >= 20


async def test_every_operation_without_a_credential_is_401(service: RunningService) -> None:
    refused = []
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as anonymous:
        for operation in await documented_operations(service):
            if operation.path in PUBLIC_PATHS | SIGNED_PATHS:
                continue
            response = await anonymous.request(operation.method, operation.url(), json={})
            assert_envelope(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer", operation
            # The document says so too: clients and fuzzers know a credential is needed.
            assert operation.spec.get("security") == [{"bearer": []}], operation
            assert "401" in operation.spec["responses"], operation
            refused.append(str(operation))
    assert len(refused) >= 18, refused


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Basic dGVzdC1rZXktMS0wMTIzNDU2Nzg5Og==",
        "test-key-1-0123456789",
        "Token test-key-1-0123456789",
        "Bearer test-key-1-0123456789x",
    ],
)
async def test_malformed_authorization_headers_are_401(
    service: RunningService, authorization: str
) -> None:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        for operation in await documented_operations(service):
            if operation.path in PUBLIC_PATHS | SIGNED_PATHS:
                continue
            response = await client.request(
                operation.method, operation.url(), headers={"Authorization": authorization}
            )
            assert_envelope(response, 401, "unauthorized")


async def test_public_operations_need_no_credential(service: RunningService) -> None:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as anonymous:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            assert (await anonymous.get(path)).status_code == 200, path
        vapid = await anonymous.get("/v1/push/vapid-public-key")
        assert vapid.status_code in (200, 404)  # 404 when Web Push is not configured
        if vapid.status_code == 404:
            assert_envelope(vapid, 404, "not_found")
        inbox = await anonymous.get("/inbox")
        assert inbox.status_code == 200 and inbox.headers["content-type"].startswith("text/html")
        # The Twilio webhook has no bearer credential: it is not configured here (404), or it
        # checks the signature (403); never 2xx for an unsigned callback.
        twilio = await anonymous.post(
            "/v1/webhooks/twilio/status", data={"MessageSid": "SM1", "MessageStatus": "delivered"}
        )
        assert twilio.status_code in (403, 404), twilio.text


@pytest.mark.parametrize("kind", FORGED_KINDS)
async def test_forged_and_stale_tokens_are_refused_everywhere(
    service: RunningService, kind: str
) -> None:
    user = "victim-user"
    token = forged_tokens(service, user)[kind]
    async with httpx.AsyncClient(
        base_url=service.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        for operation in await documented_operations(service):
            if operation.path in PUBLIC_PATHS | SIGNED_PATHS:
                continue
            response = await client.request(operation.method, operation.url(user_id=user))
            if kind == "API key as token":
                assert response.status_code != 401  # it is a key: valid on HTTP, not on the WS
                continue
            assert_envelope(response, 401, "unauthorized")


@pytest.mark.parametrize("kind", [*FORGED_KINDS, "empty"])
async def test_forged_and_stale_tokens_close_the_websocket_4401(
    service: RunningService, kind: str
) -> None:
    token = "" if kind == "empty" else forged_tokens(service, "victim-user")[kind]
    async with websockets.connect(ws_url(service, token)) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            frame = await socket.recv()
            pytest.fail(f"a {kind} token got a frame: {frame!r}")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_websocket_without_token_parameter_closes_4401(service: RunningService) -> None:
    url = f"ws://{service.settings.host}:{service.settings.port}/v1/ws"
    async with websockets.connect(url) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_genuine_token_still_works(service: RunningService) -> None:
    """The refusals above are about the tokens, not a broken verifier."""
    token = await service.user_token("victim-user")
    async with service.client(token) as client:
        response = await client.get("/v1/users/victim-user/notifications")
    assert response.status_code == 200, response.text
