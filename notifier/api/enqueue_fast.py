"""``POST /v1/notifications`` without FastAPI's per-request plumbing (issue 15).

The producer's hot path: one notification per request, thousands a second. Through FastAPI it
paid the router's walk over the included routers, the request handler's content-type parsing,
``json.loads`` and a second pass of pydantic over the dict, and the dependency graph solved
anew per request (bench/RESULTS.md, "Enqueue plumbing A/B"); then, in front of all that, the
layers every request crosses: FastAPI's telemetry check and its two middlewares, ours (log
redaction, the body limit, 405s), the exception handlers, each wrapping ``send`` for the
answer to pass back out (bench/RESULTS.md, "Outer layers of the enqueue A/B").

``NotifierApp`` hands a request here before any of those layers (``takes``), and this does what
each of them would do with it, or gives it to them:

- telemetry: taken only while FastAPI's own telemetry is off (``NotifierApp``), and only when
  the middlewares are ours alone (one a deployment adds sees every request);
- log redaction: only a request without a query string is taken (nothing to redact);
- the body limit: a declared ``Content-Length`` within ``max_bytes``, read with the same
  timeout (``BodySizeLimit.read_whole``: its 408, one deadline per request); a chunked or
  larger body goes to the middleware, which answers it;
- 405s: ``POST`` is served at this path;
- the exception handlers: an error is answered as they would (``errors.error_response``, the
  500 as Starlette's outermost layer does: answered, logged, re-raised).

A request taken is then one whose answer it can give exactly as the route would: a JSON body
(``Content-Type`` ``application/json``) that ``NotificationCreate`` accepts straight from the
bytes, and no ``Idempotency-Key``. It authenticates with the route's own checks
(``deps.principal_for``, ``deps.require_producer``) and answers with the route's own code
(``routes/notifications.enqueue_one``), the 202 written as two ASGI messages. Every other
request, an invalid body included, goes through every layer with what was read of it
replayed, so FastAPI answers it as before: its 422s, their order against a 401, every message
are unchanged. The route stays declared, so the OpenAPI document is the same.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notifier.api.body_limit import BodySizeLimit
from notifier.api.deps import client_limits, context_of, principal_for, require_producer
from notifier.api.errors import error_response, unexpected_error_response
from notifier.api.methods import route_path
from notifier.api.routes.notifications import enqueue_one
from notifier.schemas.notification import NotificationCreate

PATH = "/v1/notifications"
_VALIDATE = NotificationCreate.model_validate_json


def takes(scope: Scope) -> bool:
    """A request for this path, with no query string (see above: log redaction)."""
    return (
        scope["type"] == "http"
        and scope["method"] == "POST"
        and not scope.get("query_string")
        and route_path(scope) == PATH
    )


def _is_json(content_type: bytes | None) -> bool:
    """``application/json`` (parameters allowed): a media type FastAPI reads as JSON. Anything
    it might read otherwise (``+json`` types, odd spellings) goes the router's way."""
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class EnqueueFastPath:
    """``app``: what answers the requests not answered here. ``NotifierApp`` puts one in front
    of every layer (``app``: all of them), and one right inside the exception handlers, as
    before, for when the outer one stands aside (``app``: the router): FastAPI's telemetry
    on, a middleware not ours. Inside, the layers have done their part, and doing it again is
    harmless (a query string never reaches it, the body limit's deadline is met by either)."""

    def __init__(self, app: ASGIApp, *, limit: BodySizeLimit) -> None:
        self.app = app
        self.limit = limit

    def _fits(self, content_type: bytes | None, length: bytes | None, _: bytes | None) -> bool:
        """A JSON body whose declared length is within the limit (any other goes the long way,
        where the body limit answers 413, or FastAPI reads it)."""
        return (
            _is_json(content_type)
            and length is not None
            and length.isdigit()
            and int(length) <= self.limit.max_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not takes(scope):  # inside the layers, every request comes this way
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if headers is None or not self._fits(*headers):
            await self.app(scope, receive, send)
            return
        authorization = headers[2]
        received = await self.limit.read_whole(receive, send)
        if received is None:  # answered: 408
            return
        body = _body(received)
        if body is None or len(body) > self.limit.max_bytes:  # a disconnect; more than declared
            await self.app(scope, _replay(received, receive), send)
            return
        try:
            payload = _VALIDATE(body)
        except ValidationError:  # FastAPI words the 422
            await self.app(scope, _replay(received, receive), send)
            return
        request = Request(scope, receive, send)
        try:
            context = context_of(request)
            address = scope["client"][0] if scope.get("client") else "unknown"
            header = authorization.decode("latin-1") if authorization is not None else ""
            principal = principal_for(context, client_limits(request), address, header)
            await require_producer(principal)
            response = await enqueue_one(request, principal, context, payload, None)
        except Exception as exc:
            refusal = error_response(exc)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            await unexpected_error_response(exc)(scope, receive, send)
            raise
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})


def _headers(scope: Scope) -> tuple[bytes | None, bytes | None, bytes | None] | None:
    """``Content-Type``, ``Content-Length`` and ``Authorization``, the first of each, as
    Starlette's ``Headers.get`` reads them; None with an ``Idempotency-Key``."""
    content_type = length = authorization = None
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            return None
        if name == b"content-type" and content_type is None:
            content_type = value
        elif name == b"content-length" and length is None:
            length = value
        elif name == b"authorization" and authorization is None:
            authorization = value
    return content_type, length, authorization


def _body(received: list[Message]) -> bytes | None:
    """The body of a complete read; None if it ended with a disconnect."""
    if received[-1]["type"] != "http.request":
        return None
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
