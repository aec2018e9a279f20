"""Connection guards for the API's HTTP server: a deadline for request headers, and a cap on
open sockets.

uvicorn closes an idle keep-alive connection only after a complete request was answered, and
any byte that arrives cancels that timer; a connection that never finishes its request line
and headers is never closed, and uvicorn has no cap on open sockets (``limit_concurrency`` is
checked only once a request's headers are complete, so silent connections pile up past it
until the process runs out of file descriptors and stops accepting, ``/healthz`` included).

``GuardedHttpToolsProtocol`` is uvicorn's own HTTP protocol with three additions:

* a deadline of ``header_timeout_seconds`` from when the connection opens, and again from the
  end of each response, until the next request's headers are complete; a connection still
  waiting for them then is closed. Sending bytes slowly does not push the deadline back. A
  request in progress (its body, the app's answer) and an upgraded WebSocket are not affected.
* a cap of ``max_connections`` open sockets, counted in uvicorn's own connection set (HTTP
  connections and WebSockets alike). A connection past the cap is answered with 503 and the
  JSON error envelope, its input is discarded, and it is closed: it costs a file descriptor for
  a moment, not for as long as its client likes.
* a reserve of ``PROBE_RESERVE`` connections past the cap for probes. A liveness probe
  (kubelet, Docker's HEALTHCHECK) that meets a 503 counts a failure, and enough of them restart
  a process that is healthy, only full; Prometheus loses its scrape exactly when the numbers
  matter. So a connection past the cap, while the reserve has room, is read for
  ``PROBE_HEADER_TIMEOUT_SECONDS``: ``GET /healthz`` and ``GET /metrics`` are answered (then the
  connection is closed, so that it gives its place back), anything else — ``/readyz``
  included: a full process is not ready for more — gets the 503, as does a connection whose
  headers have not come by then. Past the reserve too, the 503 goes out at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from notifier.api.errors import error_json

log = logging.getLogger("notifier.api.connections")

# How long a refused connection is kept after its 503 went out, for the client to read it and
# close first: closing with unread input would reset the connection and lose the answer.
REFUSED_LINGER_SECONDS = 1.0
REFUSAL_LOG_INTERVAL_SECONDS = 10.0

# Past the cap, this many more connections may be open to be read for a probe. Probes come a
# few per period (kubelet's liveness and readiness, a scrape) and each holds its place for
# milliseconds, or PROBE_HEADER_TIMEOUT_SECONDS at most (server.py keeps descriptors for them).
PROBE_RESERVE = 16
PROBE_PATHS = frozenset({b"/healthz", b"/metrics"})
# A probe sends its request at once; a connection in the reserve that does not, gets its 503.
PROBE_HEADER_TIMEOUT_SECONDS = 1.0


def refusal_response(*, retry_after_seconds: int = 1) -> bytes:
    body = error_json(
        "unavailable", "this server has as many open connections as it allows; try again shortly"
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"retry-after: {retry_after_seconds}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class Admission(enum.Enum):
    SERVED = "served"  # within the cap
    PROBE_ONLY = "probe only"  # in the reserve past the cap: a probe is answered, nothing else
    REFUSED = "refused"  # answered 503, input discarded, closed soon


@dataclass
class ConnectionLimits:
    """What the guards enforce, shared by every connection of one server."""

    header_timeout_seconds: float
    max_connections: int
    refused: int = 0
    # Open connections that do not count against the cap: those read for a probe, and those
    # refused that are still open for their 503 to be read.
    in_reserve: int = 0
    lingering: int = 0
    _last_report: float = field(default=0.0, repr=False)

    def admission(self, open_connections: int) -> Admission:
        """How a connection that has just opened, with ``open_connections`` open (itself
        included), is taken."""
        if open_connections - self.in_reserve - self.lingering <= self.max_connections:
            return Admission.SERVED
        if self.in_reserve < PROBE_RESERVE:
            return Admission.PROBE_ONLY
        return Admission.REFUSED

    @property
    def probe_header_timeout_seconds(self) -> float:
        return min(PROBE_HEADER_TIMEOUT_SECONDS, self.header_timeout_seconds)

    def note_refusal(self) -> None:
        # One line per interval, not one per connection: a flood must not flood the log too.
        self.refused += 1
        now = time.monotonic()
        if now - self._last_report >= REFUSAL_LOG_INTERVAL_SECONDS:
            self._last_report = now
            log.warning(
                "connection limit reached (%d open sockets, NOTIFIER_MAX_CONNECTIONS): "
                "refused %d connection(s) with 503 so far",
                self.max_connections,
                self.refused,
            )


class GuardedConfig(Config):
    """uvicorn's ``Config`` carrying the ``ConnectionLimits`` its protocol enforces."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedHttpToolsProtocol, **kwargs)
        self.connection_limits = limits


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config, GuardedConfig):
            raise TypeError("GuardedHttpToolsProtocol needs a GuardedConfig")
        self.limits = config.connection_limits
        self._header_deadline: asyncio.TimerHandle | None = None
        self._admission = Admission.SERVED

    # ---- asyncio.Protocol

    # As uvicorn's own protocol: a TCP server always hands over a Transport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        admission = self.limits.admission(len(self.connections))
        if admission is Admission.REFUSED:
            self._refuse()
            return
        if admission is Admission.PROBE_ONLY:
            self._admission = admission
            self.limits.in_reserve += 1
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._admission is Admission.REFUSED:
            return  # the 503 went out already; the request is not read
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        self._leave_count()
        super().connection_lost(exc)

    # ---- httptools parser and uvicorn callbacks

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        if self._admission is Admission.REFUSED:
            return  # a request pipelined behind the refused one
        if self._admission is Admission.PROBE_ONLY and not self._is_probe():
            self._refuse()
            return
        super().on_headers_complete()
        if self._admission is Admission.PROBE_ONLY and self.cycle is not None:
            # One request per connection in the reserve: closed after the answer.
            self.cycle.keep_alive = False

    # The parser goes on through the rest of the bytes it was fed after a refusal in
    # on_headers_complete: a refused request has no cycle to take its body, nor an upgrade.
    def on_body(self, body: bytes) -> None:
        if self._admission is not Admission.REFUSED:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._admission is not Admission.REFUSED:
            super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        if self._admission is not Admission.REFUSED:
            super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request, unless a pipelined one is already past its headers.
        if not self._request_in_progress():
            self._arm_header_deadline()

    # ---- the guards

    def _request_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _is_probe(self) -> bool:
        try:
            path = httptools.parse_url(self.url).path
        except httptools.HttpParserInvalidURLError:
            return False
        return self.parser.get_method() == b"GET" and path in PROBE_PATHS

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        if self.transport.is_closing():
            return
        timeout = (
            self.limits.probe_header_timeout_seconds
            if self._admission is Admission.PROBE_ONLY
            else self.limits.header_timeout_seconds
        )
        self._header_deadline = self.loop.call_later(timeout, self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        upgraded = self.transport.get_protocol() is not self
        if upgraded or self._request_in_progress() or self.transport.is_closing():
            return
        if self._admission is Admission.PROBE_ONLY:
            self._refuse()  # not a probe: the answer any connection past the cap gets
            return
        # Nothing to answer: the request never arrived. Closing is what nginx does too.
        self.transport.close()

    def _leave_count(self) -> None:
        if self._admission is Admission.PROBE_ONLY:
            self.limits.in_reserve -= 1
        elif self._admission is Admission.REFUSED:
            self.limits.lingering -= 1

    def _refuse(self) -> None:
        self._leave_count()
        self._admission = Admission.REFUSED
        self.limits.lingering += 1
        self.limits.note_refusal()
        self.transport.write(refusal_response())
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client sees the answer end, and closes its side
        self._header_deadline = self.loop.call_later(REFUSED_LINGER_SECONDS, self.transport.close)
