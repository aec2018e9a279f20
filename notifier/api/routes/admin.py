"""The operator console: ``GET /v1/admin/stats`` (its figures) and ``GET /admin`` with its assets
(the page; docs/architecture.md, "Operator console").

The page is plain HTML, CSS and JavaScript from ``notifier/api/static`` plus the vendored uPlot
(``static/vendor/uplot``, MIT, with its LICENSE), served with a strict Content-Security-Policy:
scripts, styles and requests to this origin only, nothing inline. The page itself needs no
credential; every figure it shows comes from the key-protected API, with the key the operator
types in.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from notifier.api.deps import ProducerDep, SessionDep
from notifier.api.static_files import PAGE_HEADERS, Assets, read_static, static_response
from notifier.channels.registry import CHANNELS
from notifier.schemas.admin import AdminStats, ChannelStats, LatencySeries, QueueDepth
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.storage.admin_stats import MAX_WINDOW_SECONDS, MIN_WINDOW_SECONDS, delivery_stats

router = APIRouter(tags=["admin"], responses=error_responses(*AUTHENTICATED))
page_router = APIRouter(include_in_schema=False)

_ASSETS: Assets = {
    "admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "admin.css": ("admin.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, **PAGE_HEADERS}


@router.get("/v1/admin/stats", response_model=AdminStats)
async def admin_stats(
    _: ProducerDep,
    session: SessionDep,
    window_seconds: Annotated[
        int, Query(ge=MIN_WINDOW_SECONDS, le=MAX_WINDOW_SECONDS, description="the window, seconds")
    ] = 3600,
) -> AdminStats:
    """Per channel, sent/delivered/failed/skipped per step and due → sent latency percentiles
    over the window, and the queue now; the same on every API instance (from the database)."""
    stats = await delivery_stats(session, window_seconds, channels=CHANNELS.names)
    return AdminStats(
        window_seconds=stats.window.window_seconds,
        step_seconds=stats.window.step_seconds,
        timestamps=stats.window.timestamps,
        channels={
            name: ChannelStats(
                **series.counts,
                latency_ms=LatencySeries(**series.latency_ms),
                queue=QueueDepth(**series.queue),
            )
            for name, series in stats.channels.items()
        },
    )


@page_router.get("/admin")
async def admin_page() -> Response:
    return Response(
        read_static("admin.html"), media_type="text/html; charset=utf-8", headers=_HEADERS
    )


@page_router.get("/admin/{name}")
async def admin_asset(name: str) -> Response:
    return static_response(_ASSETS, name, what="console asset", headers=_HEADERS)
