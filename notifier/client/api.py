"""Every API method, written once (``NotifierApi``); the sync and async clients (clients.py)
differ only in how they send a ``Call``. What each method sends, and whether it is safe to
retry, is described in the package's docstring (``notifier.client``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from notifier.client.calls import Call, drop_none, notification_body, segment
from notifier.client.errors import NotifierError
from notifier.client.retry import retry_options

R = TypeVar("R")  # what a method returning a JSON object returns: the object, or an awaitable
L = TypeVar("L")  # the same for a JSON list


class NotifierApi(Generic[R, L]):
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

    def _retry_options(self, call: Call) -> dict[str, Any]:
        return retry_options(
            call,
            max_retries=self.max_retries,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
        )

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
        return self._object(Call("GET", f"/v1/notifications/{segment(str(notification_id))}"))

    def user_token(self, user_id: str, *, ttl_seconds: int | None = None) -> R:
        """Mint a token for an end user's inbox and WebSocket: ``{"token", "expires_at"}``."""
        body = {"ttl_seconds": ttl_seconds} if ttl_seconds is not None else None
        return self._object(Call("POST", f"/v1/users/{segment(user_id)}/tokens", body))

    # --- tasks ----------------------------------------------------------------------------------

    def create_task(self, task_id: str, user_id: str, task_type: str, **fields: Any) -> R:
        """Create a task; ``fields``: ``total_steps``, ``estimated_duration``, ``tags``,
        ``task_metadata`` (which may override the trigger channels)."""
        body = {"task_id": task_id, "user_id": user_id, "task_type": task_type, **fields}
        return self._object(Call("POST", "/v1/tasks", body))

    def get_task(self, task_id: str) -> R:
        return self._object(Call("GET", f"/v1/tasks/{segment(task_id)}"))

    def update_task(self, task_id: str, **fields: Any) -> R:
        """PATCH a task with any of ``progress``, ``status``, ``current_step``, ``result``,
        ``error_message``, ``error_details``; triggers fire on the service."""
        return self._object(Call("PATCH", f"/v1/tasks/{segment(task_id)}", drop_none(fields)))

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
        body = {"level": level, "message": message, **drop_none(fields)}
        key = idempotency_key or str(uuid.uuid4())
        return self._object(
            Call(
                "POST",
                f"/v1/tasks/{segment(task_id)}/logs",
                body,
                headers={"Idempotency-Key": key},
            )
        )
