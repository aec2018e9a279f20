"""The published OpenAPI document, with what FastAPI's generator cannot say by itself, so that
the document describes exactly what the API accepts (tests/fuzz checks it with every
schemathesis check):

- ``StorableJson``, the recursive schema of the free-form JSON fields' values (no NUL in any
  string or key), which the request schemas refer to (notifier/schemas/common.py);
- ``format: cursor`` on every paging ``cursor`` parameter: an opaque ``next_cursor`` value
  from a previous page, which no pattern could describe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from notifier.schemas.common import STORABLE_JSON_SCHEMA

CURSOR_DESCRIPTION = "the next_cursor of a previous page, as it was given (opaque)"


def install_openapi(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document["components"]["schemas"]["StorableJson"] = STORABLE_JSON_SCHEMA
            _describe_cursors(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _describe_cursors(document: dict[str, Any]) -> None:
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] != "cursor" or parameter["in"] != "query":
                    continue
                parameter["description"] = CURSOR_DESCRIPTION
                for schema in parameter["schema"].get("anyOf", [parameter["schema"]]):
                    if schema.get("type") == "string":
                        schema["format"] = "cursor"
