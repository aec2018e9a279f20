"""One-click unsubscribe links (RFC 8058): signed, unguessable, and without expiry.

Every email carries ``List-Unsubscribe: <{public url}/v1/unsubscribe/{token}>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; a POST to that URL turns the
recipient's email off for the notification type (``preferences.types[type].email = false``,
the rule workers/rules.py reads) without a login, so the link itself is the credential:

    token = base64url(JSON [user_id, notification_type]) "." base64url(HMAC-SHA256)[:16 bytes]

The HMAC key is derived from ``NOTIFIER_TOKEN_SECRET`` for this one use (so an unsubscribe
signature is never a valid signature of anything else, a user token included). A link that was
altered in any byte, or signed with another secret, is refused (403) and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from notifier.settings import Settings

UNSUBSCRIBE_PATH = "/v1/unsubscribe"
_SIGNATURE_BYTES = 16  # 128 bits: unguessable, and the URL stays short
_PURPOSE = b"notifier one-click unsubscribe v1"
# A user id is at most 255 characters, a type 20: a longer token was not made by us.
MAX_TOKEN_CHARS = 2048


class InvalidUnsubscribeLink(ValueError):
    """The link was not signed by this service, or was altered."""


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    user_id: str
    notification_type: str


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload: str) -> str:
    digest = hmac.new(_key(secret), payload.encode("ascii"), hashlib.sha256).digest()
    return _b64(digest[:_SIGNATURE_BYTES])


def sign(secret: str, user_id: str, notification_type: str) -> str:
    payload = _b64(json.dumps([user_id, notification_type], separators=(",", ":")).encode())
    return f"{payload}.{_signature(secret, payload)}"


def verify(secret: str, token: str) -> UnsubscribeTarget:
    """What ``token`` unsubscribes, or ``InvalidUnsubscribeLink``."""
    payload, dot, signature = token.partition(".")
    if not dot or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise InvalidUnsubscribeLink("not an unsubscribe link of this service")
    # Compared before the payload is decoded: nothing unsigned is ever parsed.
    if not hmac.compare_digest(_signature(secret, payload), signature):
        raise InvalidUnsubscribeLink("the unsubscribe link is not valid (altered or not ours)")
    try:
        user_id, notification_type = json.loads(_unb64(payload))
    except (ValueError, TypeError, binascii.Error) as exc:  # signed by us: cannot happen
        raise InvalidUnsubscribeLink("the unsubscribe link is not valid") from exc
    return UnsubscribeTarget(str(user_id), str(notification_type))


def public_url(settings: Settings) -> str:
    """Where users reach this service: ``NOTIFIER_PUBLIC_URL``, else the Twilio callback's
    ``NOTIFIER_PUBLIC_BASE_URL``, else ``http://{HOST}:{PORT}``."""
    base = (
        settings.public_url or settings.public_base_url or f"http://{settings.host}:{settings.port}"
    )
    return base.rstrip("/")


def unsubscribe_url(settings: Settings, user_id: str, notification_type: str) -> str | None:
    """The one-click link for an email, or None when no token secret is set (a worker run
    without one: the email then goes out without List-Unsubscribe)."""
    if settings.token_secret is None:
        return None
    token = sign(settings.token_secret.get_secret_value(), user_id, notification_type)
    return f"{public_url(settings)}{UNSUBSCRIBE_PATH}/{token}"
