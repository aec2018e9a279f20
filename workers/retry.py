"""The retry decision: given a channel's attempts and the error it just met, when to try again,
or whether to give up. Pure (the clock and the random source come in as arguments), so it is
tested without a clock, a database or a peer. ``decide`` is the only retry decision in the
worker: the breaker (``workers/breaker.py``) pauses a channel because a decision says so
(``RetryAt.pauses_channel``), and an exception a channel was not meant to raise reaches it as an
``UnknownOutcomeError`` (``workers/sending.py``), docs/architecture.md "Rules".

The backoff schedule is Tenacity's exponential-with-jitter wait; a peer's ``Retry-After`` is a
floor under it. Brief in-process retries (``in_process_retrying``) use the same library for the
few quick tries before a durable retry is written to the row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from notifier.channels.base import (
    DeliveryError,
    NotDeliverable,
    PermanentError,
    ProviderAuthError,
    TransientError,
    UnknownOutcomeError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float
    # Quick in-process tries for transient errors that name no long Retry-After.
    in_process_tries: int = 3
    in_process_max_wait: float = 1.0
    # How long a channel pauses after the provider refused our credentials.
    pause_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class RetryAt:
    when: datetime
    reason: str
    # The provider refused our credentials: the whole channel pauses until ``when``, not only
    # this recipient's try (the worker's breaker acts on this; it decides nothing itself).
    pauses_channel: bool = False


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str
    skipped: bool = False  # NotDeliverable ends as `skipped`, not `failed`


Decision = RetryAt | GiveUp


def backoff_seconds(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """The wait before the ``attempt``-th retry (1-based): Tenacity's exponential schedule
    (base, 2·base, 4·base, … capped at max) with "equal jitter" drawn from ``rng``, so that
    many channels failing together do not come back together."""
    schedule = wait_exponential(
        multiplier=policy.base_seconds, min=policy.base_seconds, max=policy.max_seconds
    )
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    ceiling = float(schedule(state))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def decide(
    policy: RetryPolicy,
    *,
    attempts_in_round: int,
    unknown_outcomes: int,
    error: DeliveryError,
    now: datetime,
    rng: random.Random,
) -> Decision:
    """``attempts_in_round`` counts the tries since the channel was (re)queued, including the
    one that just failed; ``unknown_outcomes`` counts earlier unknown outcomes, this one not."""
    if isinstance(error, NotDeliverable):
        return GiveUp(str(error), skipped=True)
    if isinstance(error, PermanentError):
        return GiveUp(str(error))
    if isinstance(error, ProviderAuthError):
        # Our credentials, not the recipient: wait out the pause, never fail the recipient.
        return RetryAt(
            now + timedelta(seconds=policy.pause_seconds),
            f"channel paused: {error}",
            pauses_channel=True,
        )
    if isinstance(error, UnknownOutcomeError):
        if unknown_outcomes >= 1:
            return GiveUp(f"outcome unknown twice, not sent again: {error}")
        delay = backoff_seconds(policy, 1, rng)
        return RetryAt(now + timedelta(seconds=delay), f"outcome unknown: {error}")
    if attempts_in_round >= policy.max_attempts:
        return GiveUp(f"gave up after {attempts_in_round} attempts: {error}")
    delay = backoff_seconds(policy, attempts_in_round, rng)
    if isinstance(error, TransientError) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return RetryAt(now + timedelta(seconds=delay), str(error))


def _quick_retry_helps(policy: RetryPolicy) -> retry_if_exception:
    def check(exc: BaseException) -> bool:
        if not isinstance(exc, TransientError) or isinstance(exc, ProviderAuthError):
            return False
        return exc.retry_after is None or exc.retry_after <= policy.in_process_max_wait

    return retry_if_exception(check)


def in_process_retrying(policy: RetryPolicy, *, tries_left: int) -> AsyncRetrying:
    """Tenacity controller for the brief in-process retries of one send."""
    return AsyncRetrying(
        stop=stop_after_attempt(max(1, min(policy.in_process_tries, tries_left))),
        wait=wait_exponential(multiplier=0.05, max=policy.in_process_max_wait)
        + wait_random(0, 0.05),
        retry=_quick_retry_helps(policy),
        reraise=True,
    )
