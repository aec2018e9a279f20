"""The retry policy both clients share: which failures are retried (``is_retryable``) and how
long to wait before the next attempt (``retry_wait``), as tenacity options."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from notifier.client.calls import Call
from notifier.client.errors import NotifierError

RETRY_STATUSES = frozenset({429, 503})


def is_retryable(call: Call) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, NotifierError):
            return exc.status in RETRY_STATUSES  # refused before processing
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # the request never left
        return call.replay_safe and isinstance(exc, httpx.TransportError)

    return check


def retry_wait(state: RetryCallState, *, backoff: float, max_backoff: float) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, NotifierError) and exc.retry_after is not None:
        return min(exc.retry_after, max_backoff)
    # Exponential with jitter: backoff * 2**(n-1) plus up to one more ``backoff``, capped.
    exponential = backoff * 2.0 ** (state.attempt_number - 1)
    return min(max_backoff, exponential + random.uniform(0, backoff))


def retry_options(
    call: Call, *, max_retries: int, backoff: float, max_backoff: float
) -> dict[str, Any]:
    """Keyword arguments for ``Retrying``/``AsyncRetrying`` sending ``call``."""
    return {
        "retry": retry_if_exception(is_retryable(call)),
        "stop": stop_after_attempt(max_retries + 1),
        "wait": partial(retry_wait, backoff=backoff, max_backoff=max_backoff),
        "reraise": True,
    }
