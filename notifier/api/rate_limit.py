"""Token-bucket rate limits. Refusals are 429 with ``Retry-After``.

- per API key: every producer request;
- per recipient: the notifications enqueued for one user;
- per client address (``ClientLimits``): requests with a user token, and failed
  authentications — a missing, unknown or expired credential.

The client address is the connection's peer, or the ``X-Forwarded-For`` address when the peer
is a trusted proxy (uvicorn's ``FORWARDED_ALLOW_IPS``, default 127.0.0.1).

The buckets live in each API process's memory: with N processes behind a load balancer a
client may reach N times a limit. That keeps the limiter off the database's hot path; the
limits are a guard against a runaway or hostile client, not a billing meter.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from notifier.settings import Settings


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """``rate`` tokens per second, up to ``burst``; at most ``max_keys`` buckets are kept (the
    least recently used go first, which only ever forgives)."""

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, cost: float = 1.0) -> float | None:
        """Spend ``cost`` tokens; None if allowed, else the seconds until it would be."""
        if not self.enabled:
            return None
        now = self._clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if cost > self.burst:
            return math.inf  # can never pass: the caller must split the request
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return None
        return (cost - bucket.tokens) / self.rate

    def wait(self, key: str, cost: float = 1.0) -> float | None:
        """What ``take`` would answer, without spending or keeping anything: for a check whose
        tokens are spent only if it then fails (``deps.principal_for``)."""
        if not self.enabled:
            return None
        if cost > self.burst:
            return math.inf
        bucket = self._buckets.get(key)
        if bucket is None:
            return None  # a full bucket: burst >= cost
        tokens = min(self.burst, bucket.tokens + (self._clock() - bucket.updated) * self.rate)
        return None if tokens >= cost else (cost - tokens) / self.rate

    def refund(self, key: str, cost: float) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + cost)


MAX_RETRY_AFTER_SECONDS = 24 * 3600


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1; capped, so that "never" (inf) is still a number."""
    return str(max(1, math.ceil(min(seconds, MAX_RETRY_AFTER_SECONDS))))


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The per-address limits. ``auth_failures`` is spent by every failed authentication; once
    an address has none left, its requests are refused before their credential is even looked
    at, valid or not, until the bucket refills."""

    user_requests: TokenBuckets
    auth_failures: TokenBuckets

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(
            user_requests=TokenBuckets(
                rate=settings.rate_limit_user_per_second, burst=settings.rate_limit_user_burst
            ),
            auth_failures=TokenBuckets(
                rate=settings.rate_limit_auth_failures_per_minute / 60.0,
                burst=settings.rate_limit_auth_failures_burst,
            ),
        )
