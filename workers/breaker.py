"""Per-channel circuit breaker: after the provider refuses our credentials, the channel pauses
so that every queued recipient is not tried (and failed) against a broken configuration."""

from __future__ import annotations

import logging
from datetime import datetime

log = logging.getLogger("notifier.worker")


class ChannelBreaker:
    def __init__(self) -> None:
        self._paused_until: dict[str, datetime] = {}
        self.trips: dict[str, int] = {}

    def trip(self, channel: str, now: datetime, until: datetime, reason: str) -> None:
        """Pause ``channel`` until ``until``: what ``workers.retry.decide`` decided."""
        if self._paused_until.get(channel, now) <= now:
            # ALERT: an operator must fix credentials; the log line is what pages them.
            log.error(
                "ALERT channel %s paused until %s: the provider refused our credentials (%s)",
                channel,
                until.isoformat(),
                reason,
            )
        self._paused_until[channel] = until
        self.trips[channel] = self.trips.get(channel, 0) + 1

    def paused_until(self, channel: str, now: datetime) -> datetime | None:
        until = self._paused_until.get(channel)
        return until if until is not None and until > now else None
