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

The modules: errors.py (``NotifierError``), calls.py (a request as data, the body builders),
retry.py (the retry decision and the wait), api.py (every method, once), clients.py (the sync
and async clients).
"""

from __future__ import annotations

from notifier.client.calls import Call, JsonObject, notification_body
from notifier.client.clients import AsyncNotifierClient, NotifierClient
from notifier.client.errors import NotifierError, parse_retry_after
from notifier.client.retry import RETRY_STATUSES

__all__ = [
    "RETRY_STATUSES",
    "AsyncNotifierClient",
    "Call",
    "JsonObject",
    "NotifierClient",
    "NotifierError",
    "notification_body",
    "parse_retry_after",
]
