"""New secrets: the producer API key, the user-token secret and the VAPID key, strong enough
for what ``Settings.refuse_weak_secrets`` asks. ``notifier secrets`` prints them for a .env
file; the embedded ``notifier run`` makes its development ones with the same functions."""

from __future__ import annotations

import secrets

from notifier.vapid import generate_private_key, public_key_b64


def generate_api_key(prefix: str = "nk_") -> str:
    return prefix + secrets.token_urlsafe(32)


def generate_token_secret() -> str:
    return secrets.token_urlsafe(48)


def secrets_env() -> str:
    """Fresh values as .env lines (what compose.yaml and `docker run --env-file` read)."""
    vapid_key = generate_private_key()
    return (
        "# notifier secrets: keep this file out of version control.\n"
        "# Producer API keys (comma-separated: add a new key, move producers over, drop the old).\n"
        f"NOTIFIER_API_KEYS={generate_api_key()}\n"
        "# Signs user tokens: whoever knows it can act as any user.\n"
        f"NOTIFIER_TOKEN_SECRET={generate_token_secret()}\n"
        "# Web Push (browser channel). Browsers subscribe with its public key:\n"
        f"#   {public_key_b64(vapid_key)} (also served at GET /v1/push/vapid-public-key)\n"
        f"NOTIFIER_VAPID_PRIVATE_KEY={vapid_key}\n"
        "# NOTIFIER_VAPID_SUBJECT=mailto:you@example.com\n"
    )
