"""Producer client for the notifier HTTP API: ``NotifierClient`` (sync) and
``AsyncNotifierClient`` (asyncio), with the same methods.

    with NotifierClient("http://notifier:8000", api_key) as client:
        client.notify("u-42", "Export ready", "Your CSV export finished.",
                      action_url="https://app.example.com/exports/7")
        client.create_task("export-7", "u-42", "export")
        client.task_started("export-7")
        client.task_progress("export-7", 40, current_step="writing rows")
        client.task_completed("export-7", result={"rows": 1200})

    async with AsyncNotifierClient("http://notifier:8000", api_key) as client:
        await client.notify("u-42", "Hello", "from asyncio")

Every method returns the decoded JSON of the answer. An error answer raises ``NotifierError``
with the ``status``, ``code``, ``message`` and ``details`` of the service's error body.

Retries. A 429 or 503 answer, or a network failure, is retried up to ``max_retries`` times with
exponential backoff and jitter; a ``Retry-After`` header sets the wait instead (capped at
``max_backoff``). Whether a request is retried depends on whether repeating it is harmless:

* ``notify`` and ``notify_batch`` send an ``Idempotency-Key`` (a new UUID per call unless you pass
  one) and send the *same* key on every retry of that call, so a retried enqueue never creates a
  second notification: the service answers the repeat with the first response.
* ``create_task`` is idempotent on the service (the same task id, user and type answers 200).
* Task updates (``task_started``, ``task_progress``, ``task_completed``, ``task_failed``,
  ``update_task``) have no Idempotency-Key on the service yet. They are retried anyway: the task
  state machine makes a repeated status report a no-op, and a repeated progress value changes
  nothing.
* ``log`` sends an ``Idempotency-Key`` like ``notify`` (a new UUID per call unless you pass one,
  the same key on every retry of that call), so it is retried like ``notify`` too, after a
  timeout or a dropped connection included: a repeated log is stored, and notified, once.
* Reads (``get_notification``, ``get_task``) and ``user_token`` are always safe to retry.
"""

from __future__ import annotations

import email.utils
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

__all__ = ["AsyncNotifierClient", "NotifierClient", "NotifierError"]

JsonObject = dict[str, Any]
RETRY_STATUSES = frozenset({429, 503})


class NotifierError(Exception):
    """An error answer from the service (or a response that is not the service's JSON).

    ``status`` is the HTTP status; ``code``, ``message`` and ``details`` come from the body
    ``{"error": {"code", "message", "details"}}`` (``code`` is ``"http_error"`` when the body is
    not in that form). ``retry_after`` holds the seconds of a ``Retry-After`` header, if any.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> NotifierError:
        code, message, details = "http_error", response.reason_phrase or "error", None
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
            details = error.get("details")
        return cls(
            response.status_code,
            code,
            message,
            details,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --- requests: built once, sent by either client ---------------------------------------------


def _identity(body: Any) -> Any:
    return body


@dataclass(frozen=True)
class Call:
    """One API request, independent of how it is sent.

    ``replay_safe``: repeating it after an unknown outcome (timeout, dropped connection) cannot
    duplicate anything. When false, only failures that prove the request was not processed are
    retried. ``parse`` turns the decoded JSON into the method's return value.
    """

    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    replay_safe: bool = True
    parse: Callable[[Any], Any] = _identity


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _drop_none(values: Mapping[str, Any]) -> JsonObject:
    return {k: v for k, v in values.items() if v is not None}


def _isoformat(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def notification_body(
    user_id: str,
    title: str,
    message: str,
    *,
    channels: Sequence[str] | None = None,
    notification_type: str = "info",
    priority: str = "normal",
    action_url: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    related_task_id: str | None = None,
    recipient: Mapping[str, Any] | None = None,
    send_at: datetime | str | None = None,
    expires_at: datetime | str | None = None,
) -> JsonObject:
    """The JSON of one notification, as ``notify`` sends it (useful for ``notify_batch``)."""
    return _drop_none(
        {
            "user_id": user_id,
            "title": title,
            "message": message,
            "channels": list(channels) if channels is not None else None,
            "notification_type": notification_type,
            "priority": priority,
            "action_url": action_url,
            "metadata": dict(metadata) if metadata is not None else None,
            "related_task_id": related_task_id,
            "recipient": dict(recipient) if recipient is not None else None,
            "send_at": _isoformat(send_at),
            "expires_at": _isoformat(expires_at),
        }
    )


def _is_retryable(call: Call) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, NotifierError):
            return exc.status in RETRY_STATUSES  # refused before processing
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # the request never left
        return call.replay_safe and isinstance(exc, httpx.TransportError)

    return check


R = TypeVar("R")  # what a method returning a JSON object returns: the object, or an awaitable
L = TypeVar("L")  # the same for a JSON list


class _NotifierApi(Generic[R, L]):
    """Every API method, written once. A subclass decides how a ``Call`` is sent: ``_object``
    and ``_list`` return the parsed body directly (sync) or as an awaitable (async)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": "notifier-client",
        }

    # How a subclass sends a call.
    def _object(self, call: Call) -> R:
        raise NotImplementedError

    def _list(self, call: Call) -> L:
        raise NotImplementedError

    # --- shared retry policy and response handling --------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, NotifierError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_backoff)
        # Exponential with jitter: backoff * 2**(n-1) plus up to one more ``backoff``, capped.
        exponential = self.backoff * 2.0 ** (state.attempt_number - 1)
        return min(self.max_backoff, exponential + random.uniform(0, self.backoff))

    def _retry_options(self, call: Call) -> dict[str, Any]:
        return {
            "retry": retry_if_exception(_is_retryable(call)),
            "stop": stop_after_attempt(self.max_retries + 1),
            "wait": self._wait,
            "reraise": True,
        }

    @staticmethod
    def _result(call: Call, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise NotifierError.from_response(response)
        if response.status_code == 204 or not response.content:
            return call.parse(None)
        try:
            return call.parse(response.json())
        except ValueError:
            raise NotifierError(
                response.status_code, "invalid_response", "the answer is not JSON"
            ) from None

    # --- notifications --------------------------------------------------------------------------

    def notify(
        self,
        user_id: str,
        title: str,
        message: str,
        *,
        channels: Sequence[str] | None = None,
        notification_type: str = "info",
        priority: str = "normal",
        action_url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        related_task_id: str | None = None,
        recipient: Mapping[str, Any] | None = None,
        send_at: datetime | str | None = None,
        expires_at: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Enqueue one notification; returns it (202, or 200 for a replay of the same key).

        ``channels`` defaults to the service's (``["websocket"]``). ``idempotency_key`` defaults
        to a new UUID; it is reused by every retry of this call."""
        body = notification_body(
            user_id,
            title,
            message,
            channels=channels,
            notification_type=notification_type,
            priority=priority,
            action_url=action_url,
            metadata=metadata,
            related_task_id=related_task_id,
            recipient=recipient,
            send_at=send_at,
            expires_at=expires_at,
        )
        key = idempotency_key or str(uuid.uuid4())
        return self._object(
            Call("POST", "/v1/notifications", body, headers={"Idempotency-Key": key})
        )

    def notify_batch(
        self, notifications: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> L:
        """Enqueue up to 1000 notifications in one transaction (each a dict as made by
        ``notification_body``); returns the list of created notifications."""
        key = idempotency_key or str(uuid.uuid4())
        body = {"notifications": [dict(n) for n in notifications]}
        return self._list(
            Call(
                "POST",
                "/v1/notifications/batch",
                body,
                headers={"Idempotency-Key": key},
                parse=lambda answer: answer["notifications"],
            )
        )

    def get_notification(self, notification_id: str | uuid.UUID) -> R:
        """One notification with its ``status``, ``delivery_status`` and ``retry_count``."""
        return self._object(Call("GET", f"/v1/notifications/{_segment(str(notification_id))}"))

    def user_token(self, user_id: str, *, ttl_seconds: int | None = None) -> R:
        """Mint a token for an end user's inbox and WebSocket: ``{"token", "expires_at"}``."""
        body = {"ttl_seconds": ttl_seconds} if ttl_seconds is not None else None
        return self._object(Call("POST", f"/v1/users/{_segment(user_id)}/tokens", body))

    # --- tasks ----------------------------------------------------------------------------------

    def create_task(self, task_id: str, user_id: str, task_type: str, **fields: Any) -> R:
        """Create a task; ``fields``: ``total_steps``, ``estimated_duration``, ``tags``,
        ``task_metadata`` (which may override the trigger channels)."""
        body = {"task_id": task_id, "user_id": user_id, "task_type": task_type, **fields}
        return self._object(Call("POST", "/v1/tasks", body))

    def get_task(self, task_id: str) -> R:
        return self._object(Call("GET", f"/v1/tasks/{_segment(task_id)}"))

    def update_task(self, task_id: str, **fields: Any) -> R:
        """PATCH a task with any of ``progress``, ``status``, ``current_step``, ``result``,
        ``error_message``, ``error_details``; triggers fire on the service."""
        return self._object(Call("PATCH", f"/v1/tasks/{_segment(task_id)}", _drop_none(fields)))

    def task_started(self, task_id: str) -> R:
        return self.update_task(task_id, status="running")

    def task_progress(self, task_id: str, progress: float, *, current_step: str | None = None) -> R:
        """Report progress in percent (0-100)."""
        return self.update_task(task_id, progress=progress, current_step=current_step)

    def task_completed(self, task_id: str, *, result: Mapping[str, Any] | None = None) -> R:
        """Mark the task completed: the user gets a ``success`` notification."""
        return self.update_task(
            task_id, status="completed", result=dict(result) if result is not None else None
        )

    def task_failed(
        self,
        task_id: str,
        error_message: str,
        *,
        error_details: Mapping[str, Any] | None = None,
    ) -> R:
        """Mark the task failed: the user gets an ``error`` notification (priority high)."""
        return self.update_task(
            task_id,
            status="failed",
            error_message=error_message,
            error_details=dict(error_details) if error_details is not None else None,
        )

    def log(
        self,
        task_id: str,
        level: str,
        message: str,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> R:
        """Add a task log (``level``: DEBUG, INFO, WARNING, ERROR, CRITICAL); ``fields``:
        ``source``, ``context``, ``stack_trace``, ``attachments``. One Idempotency-Key per call
        (reused by its retries), so a retried ERROR log is stored and notified once."""
        body = {"level": level, "message": message, **_drop_none(fields)}
        key = idempotency_key or str(uuid.uuid4())
        return self._object(
            Call(
                "POST",
                f"/v1/tasks/{_segment(task_id)}/logs",
                body,
                headers={"Idempotency-Key": key},
            )
        )


class NotifierClient(_NotifierApi[JsonObject, list[JsonObject]]):
    """The synchronous client (``httpx.Client``). Use it as a context manager, or ``close()``.

    ``transport`` replaces httpx's network transport (e.g. ``httpx.MockTransport`` in tests)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def _send(self, call: Call) -> Any:
        response = self._http.request(
            call.method, call.path, json=call.json, headers=dict(call.headers)
        )
        return self._result(call, response)

    def _execute(self, call: Call) -> Any:
        return Retrying(**self._retry_options(call))(self._send, call)

    def _object(self, call: Call) -> JsonObject:
        result: JsonObject = self._execute(call)
        return result

    def _list(self, call: Call) -> list[JsonObject]:
        result: list[JsonObject] = self._execute(call)
        return result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncNotifierClient(_NotifierApi[Awaitable[JsonObject], Awaitable[list[JsonObject]]]):
    """The asyncio client (``httpx.AsyncClient``): the same methods, to be awaited. Use it as an
    async context manager, or ``await aclose()``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def _send(self, call: Call) -> Any:
        response = await self._http.request(
            call.method, call.path, json=call.json, headers=dict(call.headers)
        )
        return self._result(call, response)

    async def _execute(self, call: Call) -> Any:
        return await AsyncRetrying(**self._retry_options(call))(self._send, call)

    async def _object(self, call: Call) -> JsonObject:
        result: JsonObject = await self._execute(call)
        return result

    async def _list(self, call: Call) -> list[JsonObject]:
        result: list[JsonObject] = await self._execute(call)
        return result

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
