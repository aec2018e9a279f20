"""``GET /inbox``: a small end-user inbox page (plain HTML, CSS and JavaScript, no build step).

The page reads the user's token and id from the URL *fragment* (``/inbox#token=...&user=...``),
which browsers never send to a server; it calls the API with ``Authorization: Bearer <token>``
and opens ``/v1/ws?token=`` for live notifications and task progress.

Every asset is served from ``notifier/api/static`` under ``/inbox/``. The page carries a strict
Content-Security-Policy: scripts and styles from this origin only (no inline code), network
access to this origin only (plus ``ws:``/``wss:`` to the same host for the WebSocket). The service
worker lives at ``/inbox/sw.js`` and is allowed the scope ``/inbox`` so that it covers the page.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response

from notifier.api.static_files import PAGE_HEADERS, Assets, read_static, static_response

router = APIRouter(tags=["inbox"], include_in_schema=False)

SERVICE_WORKER_SCOPE = "/inbox"

_ASSETS: Assets = {
    "inbox.js": ("inbox.js", "text/javascript; charset=utf-8"),
    "inbox.css": ("inbox.css", "text/css; charset=utf-8"),
    "sw.js": ("sw.js", "text/javascript; charset=utf-8"),
}

# A Host header we are willing to echo into the CSP: a DNS name, IPv4 or bracketed IPv6
# literal, with an optional port. Anything else falls back to 'self' alone.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def content_security_policy(host: str | None) -> str:
    """The page's policy. ``connect-src`` names the WebSocket origins explicitly: older
    browsers do not let ``'self'`` match ``ws:``/``wss:``."""
    connect = ["'self'"]
    if host and _HOST.match(host):
        connect += [f"ws://{host}", f"wss://{host}"]
    directives = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src {' '.join(connect)}",
        "worker-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


@router.get("/inbox")
async def inbox_page(request: Request) -> Response:
    headers = {
        **PAGE_HEADERS,
        "Content-Security-Policy": content_security_policy(request.headers.get("host")),
    }
    return Response(
        read_static("inbox.html"), media_type="text/html; charset=utf-8", headers=headers
    )


@router.get("/inbox/{name}")
async def inbox_asset(name: str) -> Response:
    headers = dict(PAGE_HEADERS)
    if name == "sw.js":
        headers["Service-Worker-Allowed"] = SERVICE_WORKER_SCOPE
    return static_response(_ASSETS, name, what="inbox asset", headers=headers)
