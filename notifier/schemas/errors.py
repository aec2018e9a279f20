"""The error envelope every failed request gets, as OpenAPI documents it:
``{"error": {"code", "message", "details"}}`` (rendered by notifier/api/errors.py).

``error_responses(...)`` builds a route's or router's ``responses=`` for the statuses it may
answer with, so that the published document declares each one, its body and its headers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable: unauthorized, not_found, conflict, ...")
    message: str = Field(description="what went wrong, for a human")
    details: Any = Field(
        default=None, description="per-field problems (a list for validation_error) or null"
    )


class ErrorResponse(BaseModel):
    error: ErrorBody


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}

_DESCRIPTIONS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("`bad_request`: the body could not be parsed", {}),
    401: (
        "`unauthorized`: no credential, or an invalid or expired one",
        {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    ),
    403: ("`forbidden`: this credential may not do this", {}),
    404: ("`not_found`: no such resource, or another user's", {}),
    408: (
        "`request_timeout`: the request body stopped arriving (NOTIFIER_BODY_TIMEOUT_SECONDS)",
        {},
    ),
    409: ("`conflict`: an Idempotency-Key reused with another body, or a state conflict", {}),
    413: ("`payload_too_large`: the body is over NOTIFIER_MAX_BODY_BYTES", {}),
    422: ("`validation_error`: the request breaks the schema or a rule", {}),
    429: ("`rate_limited`: too many requests for this API key or recipient", _RETRY_AFTER),
    503: ("`unavailable`: the database cannot be reached", _RETRY_AFTER),
}

# What any request with a credential and a body may meet.
AUTHENTICATED = (400, 401, 403, 404, 408, 413, 422, 429, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries declaring the error envelope for each of ``statuses``."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, headers = _DESCRIPTIONS[status]
        entry: dict[str, Any] = {"model": ErrorResponse, "description": description}
        if headers:
            entry["headers"] = headers
        responses[status] = entry
    return responses
