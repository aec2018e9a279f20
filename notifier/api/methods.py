"""405 Method Not Allowed, answered before routing, with an ``Allow`` header that names every
method the path serves.

What the router alone did: ``GET /v1/notifications/batch`` went to
``GET /v1/notifications/{notification_id}`` and failed there with a 422 ("batch" is no UUID),
though no GET is served at that path; and a 405 named the methods of the first route on a path
only (``OPTIONS /v1/tasks/{id}`` said ``Allow: GET``, not ``GET, PATCH``). Here a literal path
(``/v1/notifications/batch``) is never taken for a value of a parameter, and a path's methods
are those of every route that serves it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from notifier.api.errors import error_json


class MethodTable:
    """The methods served per path: literal paths by name, parameterised ones by pattern."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.literal: dict[str, set[str]] = {}
        self.parameterised: list[tuple[re.Pattern[str], set[str]]] = []
        for route in routes:
            if not isinstance(route, Route) or not route.methods:
                continue  # WebSocket routes, mounts: not ours to judge
            if "{" in route.path:
                self.parameterised.append((route.path_regex, set(route.methods)))
            else:
                self.literal.setdefault(route.path, set()).update(route.methods)

    def allowed(self, path: str) -> set[str] | None:
        """The methods served at ``path``, or None if no route serves it (a 404 to come)."""
        literal = self.literal.get(path)
        if literal is not None:
            return literal
        methods: set[str] = set()
        for pattern, served in self.parameterised:
            if pattern.match(path):
                methods |= served
        return methods or None


def route_path(scope: Scope) -> str:
    """The request's path as the router sees it: below the root path the app is mounted at."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class MethodNotAllowed:
    def __init__(self, app: ASGIApp, *, table: MethodTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed = self.table.allowed(route_path(scope))
            if allowed is not None and scope["method"] not in allowed:
                await _refuse(send, allowed)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, allowed: set[str]) -> None:
    body = error_json("method_not_allowed", "Method Not Allowed")
    await send(
        {
            "type": "http.response.start",
            "status": 405,
            "headers": [
                (b"allow", ", ".join(sorted(allowed)).encode("ascii")),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
