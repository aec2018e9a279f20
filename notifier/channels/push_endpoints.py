"""Which push endpoints we are willing to POST to (SSRF policy): ``notifier.net_guard``'s, which
webhooks share; the push specifics are that only https is allowed (plain http only with
``NOTIFIER_PUSH_ALLOW_PRIVATE_ENDPOINTS``) and that the messages name a push endpoint.
"""

from __future__ import annotations

from notifier.net_guard import (
    GuardedResolver,
    IPAddress,
    UnsafeAddressError,
    UnsafeEndpointError,
    check_endpoint_url,
    guarded_connector,
    is_unsafe_address,
    is_unsafe_address_error,
    not_allowed,
)

__all__ = [
    "NOT_ALLOWED",
    "GuardedResolver",
    "IPAddress",
    "UnsafeAddressError",
    "UnsafeEndpointError",
    "check_push_endpoint",
    "guarded_connector",
    "is_unsafe_address",
    "is_unsafe_address_error",
]

# The one message for every refusal by address (see ``notifier.net_guard``).
NOT_ALLOWED = not_allowed("push endpoint")


async def check_push_endpoint(url: str, *, allow_private: bool) -> None:
    """Raise ``UnsafeEndpointError`` unless ``url`` is an acceptable push endpoint."""
    await check_endpoint_url(
        url, allow_private=allow_private, kind="push endpoint", require_https=True
    )
