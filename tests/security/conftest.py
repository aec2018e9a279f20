"""Helpers for the security tests: the app's own list of operations, forged credentials, and
WebSocket plumbing."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import websockets

from tests.support.service import RunningService
from tests.support.worker import dispatcher_beside
from workers.dispatcher import Dispatcher

# Reachable without a credential (docs/architecture.md, "HTTP API"); the Twilio webhook checks a
# signature.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/push/vapid-public-key"})
SIGNED_PATHS = frozenset({"/v1/webhooks/twilio/status", "/v1/unsubscribe/{token}"})


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the template, as the document has it
    spec: dict[str, Any]

    def url(self, **values: str) -> str:
        """The path with each ``{name}`` filled from ``values`` or with a harmless stand-in."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in values:
                return values[name]
            return str(uuid.uuid4()) if name.endswith("notification_id") else f"sec-{name}"

        return re.sub(r"\{([^}]+)\}", fill, self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


async def documented_operations(service: RunningService) -> list[Operation]:
    """Every operation in the OpenAPI document the running service publishes."""
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        document = (await client.get("/openapi.json")).json()
    return [
        Operation(method.upper(), path, spec)
        for path, methods in document["paths"].items()
        for method, spec in methods.items()
        if method in {"get", "put", "post", "patch", "delete"}
    ]


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


# ------------------------------------------------------------------ forged tokens


def _claims(user_id: str, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    claims: dict[str, Any] = {
        "sub": user_id,
        "typ": "user",
        "iat": now,
        "exp": now + timedelta(minutes=10),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


FORGED_KINDS = (
    "garbage",
    "expired",
    "tampered payload",
    "tampered signature",
    "unsigned",
    "other secret",
    "alg none",
    "alg none, signature kept",
    "HS512 with our secret",
    "no typ",
    "other typ",
    "no exp",
    "sub not a string",
    "API key as token",
)


def _hs512(claims: dict[str, Any], secret: str) -> str:
    with warnings.catch_warnings():  # our secret is shorter than HS512 would like: no matter
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS512")


def forged_tokens(service: RunningService, user_id: str) -> dict[str, str]:
    """Credentials for ``user_id`` that must all be refused as user tokens, by FORGED_KINDS."""
    assert service.settings.token_secret is not None
    secret = service.settings.token_secret.get_secret_value()
    valid = jwt.encode(_claims(user_id), secret, algorithm="HS256")
    header, payload, signature = valid.split(".")
    other_payload = jwt.encode(_claims("someone-else"), secret, algorithm="HS256").split(".")[1]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    past = datetime.now(UTC) - timedelta(hours=1)
    tokens = {
        "garbage": "not-a-token",
        "expired": jwt.encode(_claims(user_id, iat=past, exp=past), secret, algorithm="HS256"),
        "tampered payload": f"{header}.{other_payload}.{signature}",
        "tampered signature": f"{header}.{payload}.{flipped}",
        "unsigned": f"{header}.{payload}.",
        "other secret": jwt.encode(
            _claims(user_id), "another-secret-that-is-long-enough", algorithm="HS256"
        ),
        "alg none": jwt.encode(_claims(user_id), None, algorithm="none"),
        "alg none, signature kept": (
            jwt.encode(_claims(user_id), None, algorithm="none").rstrip(".") + f".{signature}"
        ),
        "HS512 with our secret": _hs512(_claims(user_id), secret),
        "no typ": jwt.encode(_claims(user_id, typ=None), secret, algorithm="HS256"),
        "other typ": jwt.encode(_claims(user_id, typ="service"), secret, algorithm="HS256"),
        "no exp": jwt.encode(_claims(user_id, exp=None), secret, algorithm="HS256"),
        "sub not a string": jwt.encode(_claims(user_id, sub=12345), secret, algorithm="HS256"),
        "API key as token": service.api_key,
    }
    assert tuple(tokens) == FORGED_KINDS
    return tokens


# ------------------------------------------------------------------ websockets


def ws_url(service: RunningService, token: str) -> str:
    return f"ws://{service.settings.host}:{service.settings.port}/v1/ws?token={token}"


async def frames_until_quiet(
    socket: websockets.ClientConnection, *, quiet: float = 0.5
) -> list[dict[str, Any]]:
    """Every frame the socket receives until none arrives for ``quiet`` seconds."""
    frames: list[dict[str, Any]] = []
    while True:
        try:
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), quiet)))
        except TimeoutError:
            return frames


async def next_frame(socket: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame["type"] == kind:
            return dict(frame)


@pytest.fixture(scope="module")
async def dispatcher(service: RunningService) -> AsyncIterator[Dispatcher]:
    """A dispatcher delivering the service's notifications (websocket channel included)."""
    async with dispatcher_beside(service) as running:
        yield running
