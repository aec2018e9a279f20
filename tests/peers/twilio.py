"""A local stand-in for Twilio's Messages API (2010-04-01), good enough for the real SDK.

async with TwilioPeer() as peer:
    settings = Settings(**peer.settings(), ...)   # sid, token, from number, base URL
    peer.fail_to("+15005550001", TwilioReply.error(400, 21211))   # per-number answer
    peer.script(TwilioReply.error(500))                            # next POSTs, in order
    peer.script_to("+15005550002", TwilioReply.error(429, 20429))  # next POSTs to a number
    peer.script(TwilioReply(raw_body="<html>queued</html>"))       # created; 201, not JSON
    ...
    [msg] = await peer.wait_for_messages(1)
    await peer.send_status_callback(msg.sid, "delivered", url)    # signed, like Twilio
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.peers.base import HttpPeer, Recorder

ERROR_MESSAGES = {
    20003: "Authenticate",
    20429: "Too Many Requests",
    20503: "Service Unavailable",
    21211: "The 'To' number is not a valid phone number.",
    21608: "The number is unverified. Trial accounts cannot send messages to unverified numbers",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
}


@dataclass
class TwilioReply:
    """A scripted answer to a POST. ``create`` records the message before answering, so the
    message exists although the client sees a failure (lost reply); ``hang`` never answers;
    ``raw_body`` answers ``status`` with that text as ``text/html`` instead of JSON (a proxy
    that mangles the reply), after creating the message if the status is 201."""

    status: int = 201
    code: int | None = None
    retry_after: str | None = None
    create: bool = False
    hang: bool = False
    raw_body: str | None = None

    @classmethod
    def error(cls, status: int, code: int | None = None, **kwargs: Any) -> TwilioReply:
        return cls(status=status, code=code, **kwargs)


@dataclass
class TwilioMessage:
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    date_created: datetime
    status: str = "queued"


class TwilioPeer(HttpPeer):
    def __init__(
        self,
        *,
        account_sid: str = "AC" + "1" * 32,
        auth_token: str = "peer-auth-token",
        from_number: str = "+15005550006",
    ) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.messages: list[TwilioMessage] = []
        self.posts = 0  # every POST that reached the peer, whatever the answer
        self.posts_to: Counter[str] = Counter()  # the same, by the To number
        self.list_requests: list[dict[str, str]] = []
        self._by_to: dict[str, TwilioReply] = {}
        self._queue: deque[TwilioReply] = deque()
        self._queue_to: dict[str, deque[TwilioReply]] = {}
        self._recorder = Recorder()

    def settings(self) -> dict[str, Any]:
        """Keyword arguments for ``Settings`` pointing the channel at this peer."""
        return {
            "twilio_account_sid": self.account_sid,
            "twilio_auth_token": self.auth_token,
            "twilio_from": self.from_number,
            "twilio_base_url": self.origin,
        }

    def build_app(self) -> web.Application:
        app = web.Application()
        base = "/2010-04-01/Accounts/{sid}/Messages"
        app.router.add_post(base + ".json", self._create)
        app.router.add_get(base + ".json", self._list)
        app.router.add_get(base + "/{msid}.json", self._fetch)
        return app

    def fail_to(self, to: str, reply: TwilioReply) -> None:
        """Every POST to this number gets ``reply``."""
        self._by_to[to] = reply

    def script(self, *replies: TwilioReply) -> None:
        """The next POSTs (to any number) get these replies, in order; then 201 again."""
        self._queue.extend(replies)

    def script_to(self, to: str, *replies: TwilioReply) -> None:
        """The next POSTs to this number get these replies, in order; then as before."""
        self._queue_to.setdefault(to, deque()).extend(replies)

    async def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[TwilioMessage]:  # noqa: ASYNC109
        await self._recorder.wait_until(lambda: len(self.messages) >= n, timeout)
        return list(self.messages)

    # -- API ---------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return header == f"Basic {expected}" and request.match_info["sid"] == self.account_sid

    def _error(self, status: int, code: int | None, retry_after: str | None = None) -> web.Response:
        body: dict[str, Any] = {"status": status, "message": ERROR_MESSAGES.get(code or 0, "Error")}
        if code is not None:
            body["code"] = code
            body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return web.json_response(body, status=status, headers=headers)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self.posts += 1
        if not self._authorized(request):
            return self._error(401, 20003)
        form = await request.post()
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        self.posts_to[to] += 1
        for_number = self._queue_to.get(to)
        if self._queue:
            reply = self._queue.popleft()
        elif for_number:
            reply = for_number.popleft()
        else:
            reply = self._by_to.get(to, TwilioReply())
        message = TwilioMessage(
            sid="SM" + uuid.uuid4().hex,
            to=to,
            from_=str(form.get("From", "")),
            body=body,
            status_callback=str(form["StatusCallback"]) if "StatusCallback" in form else None,
            date_created=datetime.now(UTC),
        )
        if reply.status == 201 or reply.create:
            self.messages.append(message)
            self._recorder.notify()
        if reply.hang:
            await self.hang()
        if reply.raw_body is not None:
            return web.Response(text=reply.raw_body, status=reply.status, content_type="text/html")
        if reply.status != 201:
            return self._error(reply.status, reply.code, reply.retry_after)
        return web.json_response(self._resource(message), status=201)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._error(401, 20003)
        query = dict(request.query)
        self.list_requests.append(query)
        items = [m for m in reversed(self.messages)]  # newest first, like Twilio
        if "To" in query:
            items = [m for m in items if m.to == query["To"]]
        if "From" in query:
            items = [m for m in items if m.from_ == query["From"]]
        if "DateSent>" in query:
            since = datetime.fromisoformat(query["DateSent>"].replace("Z", "+00:00"))
            items = [m for m in items if m.date_created >= since]
        page_size = int(query.get("PageSize", "50"))
        uri = request.path_qs
        return web.json_response(
            {
                "messages": [self._resource(m) for m in items[:page_size]],
                "end": max(len(items[:page_size]) - 1, 0),
                "first_page_uri": uri,
                "next_page_uri": None,
                "previous_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "start": 0,
                "uri": uri,
            }
        )

    async def _fetch(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._error(401, 20003)
        for message in self.messages:
            if message.sid == request.match_info["msid"]:
                return web.json_response(self._resource(message))
        return self._error(404, 20404)

    def _resource(self, m: TwilioMessage) -> dict[str, Any]:
        created = format_datetime(m.date_created, usegmt=True)
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": m.body,
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": m.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": m.sid,
            "status": m.status,
            "subresource_uris": {},
            "to": m.to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{m.sid}.json",
        }

    # -- status callbacks ---------------------------------------------------------------------

    def signed_callback(self, sid: str, status: str, url: str) -> tuple[dict[str, str], str]:
        """The form Twilio would POST to ``url`` and its ``X-Twilio-Signature``."""
        message = next((m for m in self.messages if m.sid == sid), None)
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "From": message.from_ if message else self.from_number,
            "To": message.to if message else "",
        }
        if message is not None:
            message.status = status
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        return params, str(signature)

    async def send_status_callback(
        self, sid: str, status: str, url: str, *, signature: str | None = None
    ) -> int:
        """POST a (signed) status callback to ``url``; returns the HTTP status it got."""
        params, good_signature = self.signed_callback(sid, status, url)
        headers = {"X-Twilio-Signature": signature if signature is not None else good_signature}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=params, headers=headers) as response,
        ):
            await response.read()
            return response.status
