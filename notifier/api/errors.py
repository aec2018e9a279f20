"""Every error the API answers with, and the handlers that render them as
``{"error": {"code", "message", "details"}}``.

    ApiError (status, code)
    ├── Unauthorized          401 unauthorized       no or invalid credential
    ├── Forbidden             403 forbidden          a credential that may not do this
    ├── NotFound              404 not_found          missing, or another user's
    ├── Conflict              409 conflict           idempotency key reuse, illegal transition
    ├── PayloadTooLarge       413 payload_too_large
    ├── Unprocessable         422 validation_error   semantic checks beyond the schema
    ├── TooManyRequests       429 rate_limited
    └── ServiceUnavailable    503 unavailable        the database is unreachable

Database connectivity failures anywhere in a request become 503; nothing else ever shows a
stack trace to the caller. Answered below the framework, in the same envelope (``error_json``):
405 ``method_not_allowed`` (methods.py), 408 ``request_timeout`` and 413 (body_limit.py), 503
past the connection cap (connections.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any, cast

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from notifier.storage.db import is_database_unavailable

log = logging.getLogger("notifier.api")


class ApiError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class Unauthorized(ApiError):
    status_code, code = 401, "unauthorized"

    def __init__(self, message: str = "a valid credential is required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status_code, code = 403, "forbidden"


class NotFound(ApiError):
    status_code, code = 404, "not_found"


class Conflict(ApiError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status_code, code = 413, "payload_too_large"


class Unprocessable(ApiError):
    status_code, code = 422, "validation_error"


class TooManyRequests(ApiError):
    status_code, code = 429, "rate_limited"


class ServiceUnavailable(ApiError):
    status_code, code = 503, "unavailable"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_json(code: str, message: str, details: Any = None) -> bytes:
    """The envelope as bytes, serialised as every ``JSONResponse`` is: for the answers that go
    out below the framework (413 from the body limit, 503 from the connection cap)."""
    return bytes(JSONResponse(error_body(code, message, details)).body)


def _validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Keep what helps a caller fix the request; drop ``input``/``ctx``, which can echo secrets
    # and hold values that are not JSON.
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in errors
    ]


def _body_not_declared_json(request: Request, details: list[dict[str, Any]]) -> bool:
    if not any(d["loc"][:1] == ["body"] for d in details):
        return False
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return not (media_type == "application/json" or media_type.endswith("+json"))


def database_unavailable(exc: BaseException) -> bool:
    # SQLSTATE classes included (too many connections, starting up, …): see storage/db.py.
    return is_database_unavailable(exc)


def _unavailable(exc: BaseException) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        error_body("unavailable", "the database is unavailable; try again shortly"),
        status_code=503,
        headers={"Retry-After": "2"},
    )


def api_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def unexpected_error_response(exc: Exception) -> JSONResponse:
    """The 500 (or the 503 of a database found unavailable only here), logged."""
    if database_unavailable(exc):
        return _unavailable(exc)
    log.error("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal error"), status_code=500)


def error_response(exc: Exception) -> JSONResponse | None:
    """What the handlers below answer for an HTTP request's ``exc``, for a path that runs
    outside them (api/enqueue_fast.py): an ``ApiError``'s envelope, a 503 for an unavailable
    database; None for anything else, which is ``unexpected_error_response``'s."""
    if isinstance(exc, ApiError):
        return api_error_response(exc)
    if database_unavailable(exc):
        return _unavailable(exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc.errors())
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}"
        if _body_not_declared_json(request, details):
            # FastAPI reads a body as JSON only when the request says it is; otherwise the
            # schema meets raw bytes, and its error would not say why.
            sent = request.headers.get("content-type")
            message = (
                "send the body as JSON with the header `Content-Type: application/json` "
                f"(this request's Content-Type: {sent or 'none'})"
            )
        return JSONResponse(error_body("validation_error", message, details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        known = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        code = known.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def on_database_error(conn: Request, exc: Exception) -> JSONResponse | None:
        # Answered here rather than in the catch-all below: that one runs in Starlette's
        # outermost middleware, which logs a traceback and re-raises after answering.
        if not database_unavailable(exc):
            raise exc
        if conn.scope["type"] == "websocket":
            # A socket is past its handshake: no HTTP answer can go out. Close it with 1013
            # (try again later); the client reconnects and gets its replay.
            log.warning("database unavailable; closing a websocket: %s", type(exc).__name__)
            with contextlib.suppress(Exception):
                await cast(WebSocket, conn).close(code=1013, reason="database unavailable")
            return None
        return _unavailable(exc)

    for kind in (
        sa_exc.DBAPIError,
        sa_exc.TimeoutError,
        sa_exc.DisconnectionError,
        ConnectionError,
        TimeoutError,
        OSError,
    ):
        # Serves HTTP (a 503) and WebSocket (a close, None) scopes alike.
        app.add_exception_handler(kind, on_database_error)  # type: ignore[arg-type]

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc)
