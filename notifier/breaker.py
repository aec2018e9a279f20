"""A circuit breaker keyed by name: a key that failed is passed over until its pause ends.

One implementation for the two breakers the service has (docs/architecture.md, "Email
relays"): the worker's per-channel breaker (``workers/breaker.py``: a provider refused our
credentials, the whole channel waits) and the email channel's per-relay breaker
(``notifier/channels/smtp_relays.py``: a relay failed transiently, the next one takes the mail).
After the pause the key is tried again as if nothing happened ("half-open" without a probe:
the next real send is the probe, and a failure trips it again).
"""

from __future__ import annotations

from datetime import datetime, timedelta


class Breaker:
    def __init__(self, *, pause_seconds: float) -> None:
        self.pause = timedelta(seconds=pause_seconds)
        self._paused_until: dict[str, datetime] = {}
        self.trips: dict[str, int] = {}

    def trip(self, key: str, now: datetime, until: datetime | None = None) -> tuple[datetime, bool]:
        """Pause ``key`` from ``now`` until ``until`` (default: the breaker's own pause): when
        the pause ends, and whether it was closed before (a trip while already open extends
        the pause; callers alert only on the first)."""
        until = until if until is not None else now + self.pause
        opened = self._paused_until.get(key, now) <= now
        self._paused_until[key] = until
        self.trips[key] = self.trips.get(key, 0) + 1
        return until, opened

    def paused_until(self, key: str, now: datetime) -> datetime | None:
        until = self._paused_until.get(key)
        return until if until is not None and until > now else None

    def close(self, key: str) -> None:
        """``key`` worked: forget its pause."""
        self._paused_until.pop(key, None)
