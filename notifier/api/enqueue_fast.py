"""``POST /v1/notifications`` without FastAPI's per-request plumbing (issue 15).

The producer's hot path: one notification per request, thousands a second. Through FastAPI it
paid the router's walk over the included routers, the request handler's content-type parsing
(an ``email.message.Message`` per request), ``json.loads`` and then a second pass of pydantic
over the dict, and the dependency graph (context, bearer, principal, producer, header) solved
anew per request: about half of the API's CPU per enqueue (bench/RESULTS.md, "Enqueue
plumbing A/B").

``EnqueueFastPath`` sits between the exception handlers and the router
(``NotifierApp.build_middleware_stack``), so the middlewares (log redaction, the body limit,
405s) and the error handlers are the same for it. A request it takes is one whose answer it
can give exactly as the route would: ``POST`` to the path, a JSON body (``Content-Type``
``application/json``) that ``NotificationCreate`` accepts straight from the bytes, and no
``Idempotency-Key``. It authenticates with the route's own checks (``deps.get_principal``,
``deps.require_producer``) called as plain functions, and answers with the route's own code
(``routes/notifications.enqueue_one``). Every other request, an invalid body included, goes to
the router with what was read of it replayed, so FastAPI answers it as before: its 422s, their
order against a 401, every message are unchanged. The route stays declared, so the OpenAPI
document is the same.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notifier.api.deps import context_of, get_principal, require_producer
from notifier.api.methods import route_path
from notifier.api.routes.notifications import enqueue_one
from notifier.schemas.notification import NotificationCreate

PATH = "/v1/notifications"
_VALIDATE = NotificationCreate.model_validate_json


def _is_json(content_type: bytes | None) -> bool:
    """``application/json`` (parameters allowed): a media type FastAPI reads as JSON. Anything
    it might read otherwise (``+json`` types, odd spellings) goes the router's way."""
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class EnqueueFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        content_type = None
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                await self.app(scope, receive, send)
                return
            if name == b"content-type" and content_type is None:
                content_type = value
        if not _is_json(content_type):
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        body = await _read_body(receive, received)
        if body is None:  # the client went away, or the body limit answered
            await self.app(scope, _replay(received, receive), send)
            return
        try:
            payload = _VALIDATE(body)
        except ValidationError:  # FastAPI words the 422
            await self.app(scope, _replay(received, receive), send)
            return
        request = Request(scope, receive, send)
        context = context_of(request)
        principal = await require_producer(await get_principal(request, context, None))
        response = await enqueue_one(request, principal, context, payload, None)
        await response(scope, receive, send)


async def _read_body(receive: Receive, received: list[Message]) -> bytes | None:
    """The whole body, every message kept in ``received``; None if a disconnect came first."""
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return None
        if not message.get("more_body", False):
            break
    if len(received) == 1:
        return bytes(received[0].get("body", b""))
    return b"".join(m.get("body", b"") for m in received)


def _replay(received: list[Message], receive: Receive) -> Receive:
    """``receive`` as if nothing had been read: what was, then what comes."""
    pending = list(received)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
