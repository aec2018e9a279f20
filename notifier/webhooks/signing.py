"""Webhook secrets and the Standard Webhooks signature (https://www.standardwebhooks.com/).

A secret is ``whsec_`` + base64 of 32 random bytes; the bytes are the HMAC-SHA256 key. Each
request carries ``webhook-id`` (the event id), ``webhook-timestamp`` (this attempt's time, in
seconds: receivers refuse stale ones, so a retry is signed afresh) and ``webhook-signature``:
``v1,<base64 HMAC of "id.timestamp.body">``, one per valid key, space-separated — two while a
rotated-out secret still signs. The ``standardwebhooks`` package computes the HMAC, so what we
send is what its ``Webhook.verify`` (in a receiver) checks.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_key() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def secret_text(key: bytes) -> str:
    """The secret as shown to the producer (once) and as receivers' libraries take it."""
    return SECRET_PREFIX + base64.b64encode(key).decode()


def signature_headers(
    event_id: str, body: bytes, keys: Sequence[bytes], at: datetime
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, signed with every key in ``keys``
    (the current one first)."""
    signatures = " ".join(Webhook(key).sign(event_id, at, body) for key in keys)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }
