"""A local Web Push service: checks VAPID (RFC 8292), decrypts aes128gcm (RFC 8291) with the
subscription's private key, records what arrived, and answers as scripted.

    async with PushPeer() as peer:
        sub = peer.subscribe()                   # a browser-like subscription on this peer
        target = sub.target                      # notifier.channels.base.PushTarget
        peer.reply(sub.id, PushReply(410))       # scripted answer for that endpoint
        peer.reply(sub.id, PushReply(hold=gate)) # answer only once ``gate`` (an Event) is set
        await peer.wait_for_holding(1)           # a request is held open right now
        ...
        [push] = await peer.wait_for_pushes(1)
        push.payload, push.ttl, push.urgency, push.topic, push.vapid_claims
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from notifier.channels.base import PushTarget
from tests.peers.base import HttpPeer, Recorder, reset_connection


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserSubscription:
    """What a browser's PushManager.subscribe() yields, plus the private half it keeps."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    @property
    def target(self) -> PushTarget:
        return PushTarget(endpoint=self.endpoint, p256dh=self.p256dh, auth=self.auth)

    def as_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def make_subscription(endpoint: str, sub_id: str | None = None) -> BrowserSubscription:
    return BrowserSubscription(
        id=sub_id or uuid.uuid4().hex,
        endpoint=endpoint,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        auth_secret=os.urandom(16),
    )


# Recorded as the status of a push whose client went away while the peer held it: the peer
# never answered it, so it was not accepted (nginx's "client closed request").
CLIENT_GONE = 499


@dataclass
class PushReply:
    """A scripted answer. ``reset`` drops the connection; ``location`` makes a redirect;
    ``hold`` keeps the request open, unanswered, until that event is set (or the peer stops)."""

    status: int = 201
    retry_after: str | None = None
    location: str | None = None
    reset: bool = False
    hold: asyncio.Event | None = None


@dataclass
class ReceivedPush:
    sub_id: str
    status: int  # what the peer answered (CLIENT_GONE: nothing, the client left first)
    ttl: str | None
    urgency: str | None
    topic: str | None
    content_encoding: str | None
    vapid_claims: dict[str, Any] | None
    vapid_public_key: str | None
    vapid_error: str | None
    payload: bytes | None  # decrypted
    headers: dict[str, str] = field(default_factory=dict)
    at: float = 0.0  # time.time() when the request arrived (before any scripted hold)

    def json(self) -> Any:
        assert self.payload is not None
        return json.loads(self.payload)


def verify_vapid(authorization: str, origin: str) -> tuple[dict[str, Any], str]:
    """Check ``vapid t=<jwt>,k=<key>``; return the claims and the key, or raise ValueError."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError(f"authorization scheme {scheme!r} is not vapid")
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    token, key = parts["t"], parts["k"]
    header_b64, claims_b64, signature_b64 = token.split(".")
    header = json.loads(b64url_decode(header_b64))
    if header.get("alg") != "ES256":
        raise ValueError(f"JWT alg {header.get('alg')!r} is not ES256")
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
    raw = b64url_decode(signature_b64)
    if len(raw) != 64:
        raise ValueError("ES256 signature must be 64 raw bytes (r||s)")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public_key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("VAPID signature does not verify") from None
    claims: dict[str, Any] = json.loads(b64url_decode(claims_b64))
    if claims.get("aud") != origin:
        raise ValueError(f"aud {claims.get('aud')!r} is not {origin!r}")
    now = time.time()
    if not now < int(claims.get("exp", 0)) <= now + 24 * 3600:
        raise ValueError("exp must be in the future and at most 24 h ahead")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise ValueError("sub must be a mailto: or https: URL")
    return claims, key


class PushPeer(HttpPeer):
    # A held request whose client hangs up is cancelled, so the peer learns of it at once.
    handler_cancellation = True

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions: dict[str, BrowserSubscription] = {}
        self.pushes: list[ReceivedPush] = []
        self._replies: dict[str, deque[PushReply]] = {}
        self._default_replies: dict[str, PushReply] = {}
        self._recorder = Recorder()
        self.holding = 0  # requests held open, unanswered, right now

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/push/{sub_id}", self._handle)
        return app

    def url_for(self, sub_id: str) -> str:
        return f"{self.origin}/push/{sub_id}"

    def subscribe(self, sub_id: str | None = None) -> BrowserSubscription:
        """A new browser-like subscription whose endpoint is on this peer."""
        sub_id = sub_id or uuid.uuid4().hex
        subscription = make_subscription(self.url_for(sub_id), sub_id)
        self.subscriptions[sub_id] = subscription
        return subscription

    def reply(self, sub_id: str, *replies: PushReply, always: bool = False) -> None:
        """Script the next answers for one endpoint (or, with ``always``, every answer)."""
        if always:
            (self._default_replies[sub_id],) = replies
        else:
            self._replies.setdefault(sub_id, deque()).extend(replies)

    def pushes_for(self, sub_id: str) -> list[ReceivedPush]:
        return [p for p in self.pushes if p.sub_id == sub_id]

    async def wait_for_pushes(self, n: int, timeout: float = 5.0) -> list[ReceivedPush]:  # noqa: ASYNC109
        await self._recorder.wait_until(lambda: len(self.pushes) >= n, timeout)
        return list(self.pushes)

    async def wait_for_holding(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until at least ``n`` requests are held open (scripted ``hold``)."""
        await self._recorder.wait_until(lambda: self.holding >= n, timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until ``predicate`` holds; re-checked whenever a request arrives, is held or ends."""
        await self._recorder.wait_until(predicate, timeout)

    async def _hold(self, gate: asyncio.Event) -> None:
        self.holding += 1
        self._recorder.notify()
        waiters = [asyncio.ensure_future(gate.wait()), asyncio.ensure_future(self.hang())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self.holding -= 1
            self._recorder.notify()

    def _next_reply(self, sub_id: str) -> PushReply:
        queue = self._replies.get(sub_id)
        if queue:
            return queue.popleft()
        return self._default_replies.get(sub_id, PushReply())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()  # before anything that could be delayed: see ReceivedPush.at
        sub_id = request.match_info["sub_id"]
        body = await request.read()
        reply = self._next_reply(sub_id)
        claims, key, vapid_error = None, None, None
        try:
            claims, key = verify_vapid(request.headers.get("Authorization", ""), self.origin)
        except (ValueError, KeyError) as exc:
            vapid_error = str(exc) or type(exc).__name__
        payload = self._decrypt(sub_id, body, request.headers.get("Content-Encoding"))
        status = reply.status
        if vapid_error and status == 201:
            status = 401
        elif payload is None and status == 201:
            status = 400
        push = ReceivedPush(
            sub_id=sub_id,
            status=status,
            ttl=request.headers.get("TTL"),
            urgency=request.headers.get("Urgency"),
            topic=request.headers.get("Topic"),
            content_encoding=request.headers.get("Content-Encoding"),
            vapid_claims=claims,
            vapid_public_key=key,
            vapid_error=vapid_error,
            payload=payload,
            headers=dict(request.headers),
            at=arrived,
        )
        if reply.hold is not None:
            try:
                await self._hold(reply.hold)
            except asyncio.CancelledError:
                # aiohttp cancels the handler when the client hangs up: never answered.
                push.status = CLIENT_GONE
                self._record(push)
                raise
            if request.transport is None or request.transport.is_closing():
                push.status = CLIENT_GONE
        self._record(push)
        if reply.reset:
            reset_connection(request)
            await self.hang()
        headers = {}
        if reply.retry_after is not None:
            headers["Retry-After"] = reply.retry_after
        if reply.location is not None:
            headers["Location"] = reply.location
        elif status == 201:
            headers["Location"] = f"{self.origin}/message/{uuid.uuid4().hex}"
        return web.Response(status=push.status, headers=headers)

    def _record(self, push: ReceivedPush) -> None:
        self.pushes.append(push)
        self._recorder.notify()

    def _decrypt(self, sub_id: str, body: bytes, encoding: str | None) -> bytes | None:
        subscription = self.subscriptions.get(sub_id)
        if subscription is None or encoding != "aes128gcm":
            return None
        try:
            plaintext: bytes = http_ece.decrypt(
                body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth_secret,
                version="aes128gcm",
            )
        except Exception:
            return None
        return plaintext
