"""``create_app(settings)``: the FastAPI application, with nothing built at import time."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from notifier import __version__
from notifier.api import docs, enqueue_fast
from notifier.api.body_limit import BodySizeLimit
from notifier.api.context import ServiceContext
from notifier.api.enqueue_fast import EnqueueFastPath
from notifier.api.errors import install_error_handlers
from notifier.api.methods import MethodNotAllowed, MethodTable, route_path
from notifier.api.openapi import install_openapi
from notifier.api.rate_limit import ClientLimits
from notifier.api.redaction import (
    RedactSecretsInServerLogs,
    install_log_redaction,
    redact_websocket_scope,
)
from notifier.api.routes import health, inbox, metrics, notifications, tasks, users, webhooks, ws
from notifier.api.routes.admin import page_router as admin_page_router
from notifier.api.routes.admin import router as admin_router
from notifier.api.routes.notification_search import router as notification_search_router
from notifier.api.routes.preferences import router as preferences_router
from notifier.api.routes.preferences import unsubscribe_router
from notifier.api.routes.templates import router as templates_router
from notifier.api.routes.webhook_endpoints import router as webhook_endpoints_router
from notifier.settings import Settings

TELEMETRY_CHECK_SECONDS = 1.0
# The middlewares ``create_app`` adds, whose work ``EnqueueFastPath`` does itself.
_OURS: set[object] = {RedactSecretsInServerLogs, BodySizeLimit, MethodNotAllowed}


class NotifierApp(FastAPI):
    """FastAPI, except that ``/v1/ws`` goes straight to its endpoint.

    Each open socket keeps the coroutine frame of every layer between uvicorn and the endpoint
    alive for as long as it stays open, and 10k sockets stay open at once (bench/RESULTS.md,
    scenario 4). The HTTP layers — error pages, body limits, exception handlers, routing,
    FastAPI's telemetry — have nothing to do for this one socket route; log redaction does, and
    stays. And ``POST /v1/notifications`` goes to ``EnqueueFastPath``, which does itself what
    those layers would do with the requests it takes (api/enqueue_fast.py).
    """

    enqueue_fast_path: EnqueueFastPath | None = None
    # ``BodySizeLimit``'s bytes and seconds, as ``create_app`` gave them to it.
    body_limit: tuple[int, float] | None = None
    _telemetry_checked_until = -math.inf
    _telemetry_was_off = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and route_path(scope) == ws.PATH:
            scope["app"] = self  # what Starlette's own entry would set: websocket.app
            redact_websocket_scope(scope)
            await ws.websocket_endpoint(WebSocket(scope, receive, send))
            return
        fast = self.enqueue_fast_path
        if fast is not None and enqueue_fast.takes(scope) and self._telemetry_off():
            scope["app"] = self
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _telemetry_off(self) -> bool:
        """FastAPI's own telemetry is off (no OpenTelemetry provider), as it checks per request:
        here at most once per ``TELEMETRY_CHECK_SECONDS``. Its check reads the environment for
        each of three providers, 5% of the enqueue's CPU (bench/RESULTS.md, "Outer layers of
        the enqueue A/B"); a provider set while serving is seen by the enqueue that late."""
        now = time.monotonic()
        if now >= self._telemetry_checked_until:
            # FastAPI before 0.16x has no telemetry of its own (pyproject asks for >= 0.115).
            telemetry = getattr(self, "_native_telemetry", None)
            self._telemetry_was_off = telemetry is None or not telemetry.enabled()
            self._telemetry_checked_until = now + TELEMETRY_CHECK_SECONDS
        return self._telemetry_was_off

    def build_middleware_stack(self) -> ASGIApp:
        """FastAPI's stack; and, if its middlewares are ours alone, ``EnqueueFastPath`` in front
        of it (``POST /v1/notifications``; api/enqueue_fast.py does what each layer would)."""
        stack = super().build_middleware_stack()
        self.enqueue_fast_path = None
        if not self.body_limit:
            return stack
        max_bytes, timeout = self.body_limit
        limit = BodySizeLimit(stack, max_bytes=max_bytes, body_timeout_seconds=timeout)
        # Inside: right inside the exception handlers, for what the outer one does not take
        # (FastAPI's telemetry on, a middleware not ours), as the layers have done their part.
        layer = stack
        while not isinstance(layer, ExceptionMiddleware):
            layer = layer.app  # type: ignore[attr-defined]  # each middleware keeps its app
        layer.app = EnqueueFastPath(layer.app, limit=limit)
        kinds: list[object] = [m.cls for m in self.user_middleware]
        ours = len(kinds) == len(_OURS) and set(kinds) == _OURS
        if ours and not self.root_path and _no_app_body_limit(self):
            self.enqueue_fast_path = EnqueueFastPath(super().__call__, limit=limit)
        return stack


def _no_app_body_limit(app: FastAPI) -> bool:
    """FastAPI's own body limit (``max_body_size``, newer FastAPI) is unset: ours is the one."""
    return getattr(app, "max_body_size", None) is None


def create_app(settings: Settings, *, context: ServiceContext | None = None) -> FastAPI:
    """Build the app. Pass ``context`` to share an engine (and the in-process wake-ups) with a
    worker in the same process; otherwise the app builds its own from ``settings`` at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = context is None
        install_log_redaction()
        app.state.context = context or ServiceContext.from_settings(settings)
        await app.state.context.start()
        try:
            yield
        finally:
            if own:
                await app.state.context.aclose()

    app = NotifierApp(
        title="notifier",
        version=__version__,
        summary="Notification delivery: WebSocket, email, Web Push and SMS, with task triggers.",
        lifespan=lifespan,
        docs_url=None,  # served by notifier/api/docs.py, from vendored files
        redoc_url=None,
    )
    app.state.client_limits = ClientLimits.from_settings(settings)
    install_error_handlers(app)
    routers = [
        *(m.router for m in (notifications, users, tasks, metrics, webhooks, ws, health)),
        tasks.user_tasks_router,
        inbox.router,
        admin_router,
        notification_search_router,
        admin_page_router,
        templates_router,
        preferences_router,
        unsubscribe_router,
        webhook_endpoints_router,
        docs.router,
    ]
    for router in routers:
        app.include_router(router)
    install_openapi(app)
    served = MethodTable([*app.router.routes, *(r for router in routers for r in router.routes)])
    app.add_middleware(MethodNotAllowed, table=served)
    app.body_limit = (settings.max_body_bytes, settings.body_timeout_seconds)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    app.add_middleware(RedactSecretsInServerLogs)  # outermost: before anything logs a URL
    return app
