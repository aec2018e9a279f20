"""Web Push (RFC 8030 / 8291 aes128gcm / 8292 VAPID) through pywebpush's ``webpush_async``.

Every subscription of the user is sent to concurrently; the push is ``sent`` when any push
service accepts it (201). The channel owns one aiohttp session whose connector enforces the
endpoint address policy at connection time (see ``push_endpoints``), and redirects are never
followed: a push service has no business redirecting a POST, and following one would let an
endpoint bounce us to an address we refused.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pywebpush import WebPushException, webpush_async

from notifier.channels.base import (
    DeliveryError,
    Destination,
    NotDeliverable,
    OutgoingMessage,
    PermanentError,
    ProviderAuthError,
    PushTarget,
    SendResult,
    SubscriptionGone,
    TransientError,
)
from notifier.channels.email import safe_link
from notifier.channels.push_endpoints import (
    NOT_ALLOWED,
    UnsafeEndpointError,
    check_push_endpoint,
    guarded_connector,
    is_unsafe_address_error,
)
from notifier.channels.retry_after import parse_retry_after
from notifier.channels.spec import Address, ChannelSpec, PayloadLimit
from notifier.models.notification import Channel, ChannelStatus
from notifier.settings import Settings

log = logging.getLogger(__name__)

# RFC 8291: one 4096-byte aes128gcm record minus its header (86), the tag (16) and the padding
# delimiter (1). Push services refuse anything larger.
MAX_PUSH_PAYLOAD_BYTES = 3993

URGENCY_BY_PRIORITY = {"low": "low", "normal": "normal", "high": "high", "urgent": "high"}

# Placeholders with the exact serialized length of a real id and timestamp, so the size of a
# payload can be known before the notification exists.
_PLACEHOLDER_ID = uuid.UUID(int=0)
_PLACEHOLDER_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def _timestamp(value: datetime) -> str:
    # Fixed length (milliseconds, explicit UTC offset) so payload sizes are predictable.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _encode_payload(
    *,
    notification_id: uuid.UUID,
    title: str,
    message: str,
    notification_type: str,
    priority: str,
    action_url: str | None,
    created_at: datetime,
) -> bytes:
    payload: dict[str, Any] = {
        "id": str(notification_id),
        "title": title,
        "message": message,
        "type": notification_type,
        "priority": priority,
        "created_at": _timestamp(created_at),
    }
    link = safe_link(action_url)
    if link:
        payload["action_url"] = link
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def build_push_payload(message: OutgoingMessage) -> bytes:
    """The JSON the service worker receives (before encryption)."""
    return _encode_payload(
        notification_id=message.notification_id,
        title=message.parts.get("push_title", message.title),
        message=message.parts.get("push_body", message.message),
        notification_type=message.notification_type,
        priority=message.priority,
        action_url=message.action_url,
        created_at=message.created_at,
    )


def push_payload_fits(
    *,
    title: str,
    message: str,
    action_url: str | None = None,
    notification_type: str = "progress",
    priority: str = "urgent",
) -> bool:
    """Whether a notification with these fields fits in one push message.

    For the API at enqueue time (no row yet): the id and timestamp have fixed sizes, and the
    defaults for type and priority are the longest valid values, so True is a guarantee.
    """
    size = len(
        _encode_payload(
            notification_id=_PLACEHOLDER_ID,
            title=title,
            message=message,
            notification_type=notification_type,
            priority=priority,
            action_url=action_url,
            created_at=_PLACEHOLDER_TIME,
        )
    )
    return size <= MAX_PUSH_PAYLOAD_BYTES


def push_topic(notification_id: uuid.UUID) -> str:
    """RFC 8030 ``Topic``: 32 hex digits, within the 32-character base64url limit."""
    return notification_id.hex


def load_vapid_key(value: str) -> Vapid:
    """A VAPID key from the base64url raw 32-byte private key, or a PEM."""
    value = value.strip()
    if value.startswith("-----BEGIN"):
        return Vapid.from_pem(value.encode())
    return Vapid.from_string(value)


def vapid_public_key(value: str) -> str:
    """The application server key browsers need: base64url of the uncompressed public point."""
    raw = load_vapid_key(value).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class _NoRedirectSession:
    """What pywebpush sees as its session: it calls ``session.post(url, **kwargs)`` and offers
    no way to pass ``allow_redirects``, so this adds it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def post(self, url: str, **kwargs: Any) -> Any:
        return self._session.post(url, allow_redirects=False, **kwargs)


def _status_error(status: int, retry_after: str | None, text: str) -> DeliveryError:
    detail = f"push service answered {status}: {text}"[:500]
    if status in (404, 410):
        return SubscriptionGone(detail)
    if status == 429:
        return TransientError(detail, retry_after=parse_retry_after(retry_after))
    if status in (401, 403):
        # Our VAPID credentials were refused; the subscription itself is fine.
        return ProviderAuthError(detail)
    if 300 <= status < 400:
        return PermanentError(f"push service answered a redirect ({status}); not followed")
    if status >= 500:
        return TransientError(detail, retry_after=parse_retry_after(retry_after))
    return PermanentError(detail)


def _combine(outcomes: Sequence[str | BaseException]) -> SendResult:
    """One result for all subscriptions: any acceptance wins; else the most hopeful error."""
    accepted = [o for o in outcomes if isinstance(o, str)]
    if accepted:
        detail = f"accepted by {len(accepted)} of {len(outcomes)} subscriptions"
        return SendResult(ChannelStatus.SENT, provider_id=accepted[0] or None, detail=detail)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    for error in errors:
        if not isinstance(error, DeliveryError):
            raise error
    if all(isinstance(e, SubscriptionGone) for e in errors):
        raise SubscriptionGone(f"all {len(errors)} push subscriptions are gone")
    for kind in (ProviderAuthError, TransientError):
        matching = [e for e in errors if isinstance(e, kind)]
        if matching:
            waits = [e.retry_after for e in matching if isinstance(e, TransientError)]
            known = [w for w in waits if w is not None]
            raise kind(str(matching[0]), retry_after=max(known) if known else None)
    raise next(e for e in errors if not isinstance(e, SubscriptionGone))


class BrowserChannel:
    name: ClassVar[Channel] = Channel.BROWSER

    def __init__(
        self,
        settings: Settings,
        *,
        on_subscription_gone: Callable[[str], Awaitable[None]],
        vapid_private_key: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._settings = settings
        self._on_gone = on_subscription_gone
        self._timeout = timeout_seconds
        if vapid_private_key is None and settings.vapid_private_key is not None:
            vapid_private_key = settings.vapid_private_key.get_secret_value()
        self._vapid: Vapid | None = None
        if vapid_private_key:
            try:
                self._vapid = load_vapid_key(vapid_private_key)
            except Exception:
                # The service must still start; the channel reports itself unconfigured.
                log.exception("VAPID private key cannot be read; browser push is disabled")
        self._session: aiohttp.ClientSession | None = None

    @property
    def configured(self) -> bool:
        return self._vapid is not None and bool(self._settings.vapid_subject)

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use because aiohttp sessions belong to the running loop.
        if self._session is None or self._session.closed:
            connector = guarded_connector(allow_private=self._settings.push_allow_private_endpoints)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        if not self.configured:
            raise NotDeliverable("channel not configured")
        if not destination.push_targets:
            raise NotDeliverable("no push subscription")
        payload = build_push_payload(message)
        if len(payload) > MAX_PUSH_PAYLOAD_BYTES:
            raise PermanentError(
                f"push payload is {len(payload)} bytes; the limit is {MAX_PUSH_PAYLOAD_BYTES}"
            )
        headers = {
            "Urgency": URGENCY_BY_PRIORITY.get(message.priority, "normal"),
            "Topic": push_topic(message.notification_id),
        }
        outcomes = await asyncio.gather(
            *(self._send_one(t, payload, headers) for t in destination.push_targets),
            return_exceptions=True,
        )
        return _combine(outcomes)

    async def _send_one(self, target: PushTarget, payload: bytes, headers: dict[str, str]) -> str:
        """Push to one subscription; returns the push service's message URL (may be empty)."""
        allow_private = self._settings.push_allow_private_endpoints
        try:
            async with asyncio.timeout(self._timeout):
                await check_push_endpoint(target.endpoint, allow_private=allow_private)
                response = await webpush_async(
                    {
                        "endpoint": target.endpoint,
                        "keys": {"p256dh": target.p256dh, "auth": target.auth},
                    },
                    data=payload,
                    vapid_private_key=self._vapid,
                    # A fresh dict per send: pywebpush writes aud and exp into it.
                    vapid_claims={"sub": str(self._settings.vapid_subject)},
                    ttl=self._settings.push_ttl_seconds,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                    aiohttp_session=_NoRedirectSession(self._get_session()),
                )
        except UnsafeEndpointError as exc:
            raise PermanentError(f"push endpoint refused: {exc}") from exc
        except WebPushException as exc:
            status = exc.status_code
            if status is None:  # malformed subscription keys and the like
                raise PermanentError(f"push subscription unusable: {exc.message}") from exc
            error = _status_error(int(status), exc.retry_after, str(exc.message))
            if isinstance(error, SubscriptionGone):
                await self._forget(target.endpoint)
            raise error from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if is_unsafe_address_error(exc):
                # Not {exc}: aiohttp's message may quote the address the name resolved to.
                raise PermanentError(f"push endpoint refused: {NOT_ALLOWED}") from exc
            raise TransientError(f"push service unreachable: {exc!r}") from exc
        except ValueError as exc:  # bad base64 / EC point in the subscription keys
            raise PermanentError(f"push subscription unusable: {exc}") from exc
        return str(response.headers.get("Location", ""))

    async def _forget(self, endpoint: str) -> None:
        try:
            await self._on_gone(endpoint)
        except Exception:
            # The push itself is settled; a failed delete is retried on the next 404/410.
            log.exception("could not delete gone push subscription %s", endpoint)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def push_configured(settings: Settings) -> bool:
    """The settings are there (whether the key can be read shows when the channel is built)."""
    return bool(settings.vapid_private_key and settings.vapid_subject)


SPEC = ChannelSpec(
    Channel.BROWSER.value, Address.PUSH_SUBSCRIPTION, quiet_hours=True,
    configured=push_configured,
    build=lambda parts: BrowserChannel(
        parts.settings, on_subscription_gone=parts.forget_push_subscription
    ),
    payload_limit=PayloadLimit(
        fits=lambda draft: push_payload_fits(**dataclasses.asdict(draft)),
        message=(
            f"the notification is too large for a Web Push message ({MAX_PUSH_PAYLOAD_BYTES} "
            "bytes after encoding); shorten the title or message, or drop the browser channel"
        ),
        reason="too large for Web Push",
        code="push_payload_too_large",
    ),
)  # fmt: skip
