"""Keep user tokens out of the server's own log lines.

A browser cannot set headers on a WebSocket, so ``GET /v1/ws`` takes the user token in its
query string. uvicorn logs every WebSocket handshake with its path and query string, at INFO on
``uvicorn.error`` (``"WebSocket /v1/ws?token=…" [accepted]``), whatever ``access_log`` says;
the access log (``NOTIFIER_ACCESS_LOG=true``) prints the query string of HTTP requests too. Both
read the scope that uvicorn handed to the app: ``RedactSecretsInServerLogs`` gives the app its
own copy of that scope, and blanks ``token`` in uvicorn's. The access log never prints headers.

At DEBUG, the websockets library (logging through ``uvicorn.error``) also prints the handshake's
raw request line and headers; ``RedactTokensFilter`` rewrites those records, and
``install_log_redaction`` puts it on uvicorn's loggers.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

SECRET_PARAMETERS = frozenset({"token"})
REDACTED = "[redacted]"


def redact_query_string(query_string: bytes) -> bytes:
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return urlencode(
        [(k, REDACTED if k in SECRET_PARAMETERS else v) for k, v in pairs], safe="[]"
    ).encode("latin-1", "replace")


# Where a WebSocket's query string as sent is kept in the scope (see below).
ORIGINAL_QUERY_STRING = "notifier.original_query_string"


def original_query_string(scope: Scope) -> bytes:
    """The query string the client sent, before ``RedactSecretsInServerLogs`` blanked it."""
    query: bytes = scope.get(ORIGINAL_QUERY_STRING) or scope.get("query_string", b"")
    return query


def _secret_maybe(query_string: bytes) -> bool:
    return b"oken" in query_string.lower() or b"%" in query_string


def redact_websocket_scope(scope: Scope) -> None:
    """Blank the token in a WebSocket's scope, keeping the original under its own key.

    A socket's scope lives as long as the socket (10k at once): rather than a copy per socket
    (~1 KiB), the one endpoint that reads the token finds the original under
    ``ORIGINAL_QUERY_STRING``, and uvicorn logs the redacted one."""
    query_string = scope.get("query_string", b"")
    if _secret_maybe(query_string) and ORIGINAL_QUERY_STRING not in scope:
        scope[ORIGINAL_QUERY_STRING] = query_string
        scope["query_string"] = redact_query_string(query_string)


class RedactSecretsInServerLogs:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            redact_websocket_scope(scope)
            await self.app(scope, receive, send)
            return
        query_string = scope.get("query_string", b"")
        if scope["type"] == "http" and _secret_maybe(query_string):
            own = dict(scope)  # what the app reads: the query string as sent
            scope["query_string"] = redact_query_string(query_string)  # what uvicorn logs
            await self.app(own, receive, send)
            return
        await self.app(scope, receive, send)


# ``token=<value>`` in a URL, and the value of an ``Authorization`` header line.
_SECRET_IN_TEXT = re.compile(
    r"(?P<key>[?&]token=)[^&\s\"']*|(?P<header>\bauthorization:\s*)\S+(?:[ \t]+\S+)?",
    re.IGNORECASE,
)
LOGGERS_WITH_URLS = ("uvicorn.error", "uvicorn.access")


def redact_text(text: str) -> str:
    return _SECRET_IN_TEXT.sub(lambda m: (m.group("key") or m.group("header")) + REDACTED, text)


class RedactTokensFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's to report, not ours
            return True
        redacted = redact_text(message)
        if redacted == message:
            return True
        if isinstance(record.args, tuple):
            # Redact inside the arguments and keep them: uvicorn's access formatter reads
            # the record's args (client, method, path, version, status), not its message.
            record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
            record.msg = redact_text(str(record.msg))
            if record.getMessage() == redacted:
                return True
        record.msg, record.args = redacted, None
        return True


_FILTER = RedactTokensFilter()


def install_log_redaction() -> None:
    """Idempotent: one filter per logger, however many apps this process builds."""
    for name in LOGGERS_WITH_URLS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
