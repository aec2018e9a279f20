"""Webhook secrets and the Standard Webhooks signature (https://www.standardwebhooks.com/).

A secret is ``whsec_`` + base64 of 32 random bytes; the bytes are the HMAC-SHA256 key. Each
request carries ``webhook-id`` (the event id), ``webhook-timestamp`` (this attempt's time, in
seconds: receivers refuse stale ones, so a retry is signed afresh) and ``webhook-signature``:
``v1,<base64 HMAC of "id.timestamp.body">``, one per valid key, space-separated — two while a
rotated-out secret still signs. The HMAC is computed here, from a keyed HMAC object made once
per key and copied per request (``standardwebhooks``' ``Webhook.sign`` rebuilt the key's
state on every call); the tests check every signature with that package's ``Webhook.verify``,
as a receiver would.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime

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
    timestamp = str(int(at.timestamp()))
    signed = b".".join((event_id.encode(), timestamp.encode(), body))
    # One key but while a rotated-out secret still signs: no generator and join for it.
    if len(keys) == 1:
        signatures = _signature(keys[0], signed)
    else:
        signatures = " ".join([_signature(key, signed) for key in keys])
    return {
        "webhook-id": event_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signatures,
    }


def _signature(key: bytes, signed: bytes) -> str:
    mac = _keyed(key).copy()
    mac.update(signed)
    # binascii directly: base64.b64encode is a Python wrapper around it (a call per request).
    return "v1," + binascii.b2a_base64(mac.digest(), newline=False).decode()


@functools.lru_cache(maxsize=1024)
def _keyed(key: bytes) -> hmac.HMAC:
    """The HMAC state after the key, made once per key (an endpoint's secret rarely changes;
    the cache holds far more keys than the 50 endpoints allowed, with a rotated-out one each)."""
    return hmac.new(key, digestmod=hashlib.sha256)
