"""A scriptable SMTP server (aiosmtpd ``Controller``, in its own thread) on 127.0.0.1.

    async with SmtpPeer() as peer:
        settings = Settings(**peer.settings(), ...)
        peer.script("RCPT", "451 4.3.0 Try again later", "451 4.3.0 Try again later")
        peer.script("DATA", "drop")         # take the message, then drop the connection
        peer.greeting = "421 4.3.2 Service not available"   # every connection
        peer.script_greetings("421 4.3.2 Try later")        # only the next connection
        peer.credentials = ("user", "pass")  # AUTH required; wrong ones get 535
        [mail] = await peer.wait_for_messages(1)
        mail.message["Subject"], mail.text, mail.html, peer.connections

Per-address rules by local-part prefix: ``busy@`` gets 451, ``nouser@`` gets 550. Scripted
responses may also be ``"stall"`` (never answer) or, for DATA, ``"drop"``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal, Self, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.peers.base import free_port

Command = Literal["MAIL", "RCPT", "DATA"]
DEFAULT_RULES = {"busy@": "451 4.3.0 Try again later", "nouser@": "550 5.1.1 No such user"}


@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    connection: int  # which accepted connection carried it (1-based)
    at: float = 0.0  # time.time() when the message was taken, before any reply

    def _part(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        # Normalised to "\n": the wire format's CRLFs are no concern of the tests.
        return cast(str, cast(EmailMessage, part).get_content()).replace("\r\n", "\n")

    @property
    def text(self) -> str:
        return self._part("plain")

    @property
    def html(self) -> str:
        return self._part("html")


async def _forever() -> None:
    """A stalled server: cancelled when the client gives up and disconnects."""
    await asyncio.Event().wait()


class _PeerSMTP(SMTP):
    def __init__(self, peer: SmtpPeer, connection: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer = peer
        self.connection = connection

    async def _handle_client(self) -> None:
        greeting = self.peer._next_greeting()
        if greeting is None:
            await super()._handle_client()
            return
        assert self.transport is not None
        try:
            if greeting == "stall":
                await _forever()
            await self.push(greeting)
        finally:
            # Like aiosmtpd's own loop, close on the way out (also when cancelled on EOF), or the
            # socket would be left for the garbage collector.
            self.transport.close()


class _Controller(Controller):
    def __init__(self, peer: SmtpPeer, **kwargs: Any) -> None:
        self.peer = peer
        super().__init__(peer, **kwargs)

    def factory(self) -> SMTP:
        server = _PeerSMTP(
            self.peer, self.peer._count_connection(), self.handler, **self.SMTP_kwargs
        )
        self.peer._servers.append(server)
        return server


class SmtpPeer:
    """The aiosmtpd handler and its controller. Hooks run in the controller's thread; results
    are handed to the test's loop with ``call_soon_threadsafe``. (aiosmtpd treats every
    handler attribute named ``auth_*`` as an AUTH mechanism: do not name one like that.)"""

    host = "127.0.0.1"

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self.port = 0
        self.credentials = credentials
        self.greeting: str | None = None
        self._greetings: deque[str] = deque()
        self.rules: dict[str, str] = dict(DEFAULT_RULES)
        self.messages: list[ReceivedEmail] = []
        self.connections = 0
        self.failed_logins = 0
        self._scripts: dict[str, deque[str]] = {"MAIL": deque(), "RCPT": deque(), "DATA": deque()}
        self._lock = threading.Lock()
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._controller: _Controller | None = None
        self._servers: list[_PeerSMTP] = []  # one per accepted connection

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``Settings`` pointing the email channel at this peer."""
        values: dict[str, Any] = {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "smtp_from": "Notifier <notify@notifier.test>",
            "smtp_starttls": False,
        }
        if self.credentials:
            values["smtp_username"], values["smtp_password"] = self.credentials
        values.update(overrides)
        return values

    def script_greetings(self, *greetings: str) -> None:
        """Greet the next connections with these (e.g. a 421), in order; then as usual."""
        with self._lock:
            self._greetings.extend(greetings)

    def _next_greeting(self) -> str | None:
        with self._lock:
            return self._greetings.popleft() if self._greetings else self.greeting

    def script(self, command: Command, *responses: str) -> None:
        """Answer the next ``command``s with these responses, in order."""
        with self._lock:
            self._scripts[command].extend(responses)

    async def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[ReceivedEmail]:  # noqa: ASYNC109
        await self.wait_until(lambda: len(self.messages) >= n, within=timeout)
        return list(self.messages)

    async def wait_until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Until ``predicate`` holds; re-checked whenever the peer records something."""
        async with asyncio.timeout(within):
            while True:
                self._changed.clear()
                if predicate():
                    return
                await self._changed.wait()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, port: int | None = None) -> Self:
        """Serve on ``port`` (a stopped peer coming back where it was), else on a free one."""
        self._loop = asyncio.get_running_loop()
        # Controller(port=0) cannot work: it probes the port it got.
        self.port = port or free_port()
        self._controller = _Controller(
            self,
            hostname=self.host,
            port=self.port,
            server_hostname="peer.test",
            authenticator=self._authenticate,
            auth_require_tls=False,
        )
        # start() blocks until the thread serves (and makes one probe connection).
        await asyncio.to_thread(self._controller.start)
        self.connections = 0
        return self

    async def stop(self) -> None:
        if self._controller is not None:
            await asyncio.to_thread(self._controller.stop)
            self._controller = None

    async def disconnect_all(self) -> None:
        """Close every open connection from the server side, as an idle timeout would."""
        assert self._controller is not None

        async def close_all() -> None:
            for server in self._servers:
                if server.transport is not None:
                    server.transport.close()

        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(close_all(), self._controller.loop)
        )

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- handler (runs in the controller thread) ----------------------------------------------

    def _count_connection(self) -> int:
        with self._lock:
            self.connections += 1
            return self.connections

    def _next(self, command: Command) -> str | None:
        with self._lock:
            queue = self._scripts[command]
            return queue.popleft() if queue else None

    def _notify(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._changed.set)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.credentials is None:
            return AuthResult(success=True)
        ok = (
            isinstance(data, LoginPassword)
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == self.credentials
        )
        if not ok:
            self.failed_logins += 1
        # handled=False: let aiosmtpd answer "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        scripted = self._next("MAIL")
        if scripted == "stall":
            await _forever()
        if scripted is not None and not scripted.startswith("250"):
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        scripted = self._next("RCPT")
        if scripted == "stall":
            await _forever()
        if scripted is not None and not scripted.startswith("250"):
            return scripted
        if scripted is None:
            for prefix, response in self.rules.items():
                if address.lower().startswith(prefix):
                    return response
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        scripted = self._next("DATA")
        if scripted not in (None, "drop", "stall") and not scripted.startswith("250"):
            return scripted
        raw = bytes(envelope.original_content or b"")
        self.messages.append(
            ReceivedEmail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                raw=raw,
                message=message_from_bytes(raw, policy=policy.default),
                connection=cast(_PeerSMTP, server).connection,
                at=time.time(),
            )
        )
        self._notify()
        if scripted == "drop":
            # The message is in; the reply never leaves: the client cannot know.
            cast(asyncio.Transport, server.transport).abort()
            await _forever()
        if scripted == "stall":
            await _forever()
        return scripted or "250 2.0.0 Message accepted"
