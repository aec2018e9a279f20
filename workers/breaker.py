"""Per-channel circuit breaker: after the provider refuses our credentials, the channel pauses
so that every queued recipient is not tried (and failed) against a broken configuration. How
long is ``workers.retry.decide``'s to say (``RetryAt.pauses_channel``); the pausing itself is
``notifier.breaker.Breaker``, shared with the email channel's per-relay breaker
(docs/architecture.md, "Email relays")."""

from __future__ import annotations

import logging
from datetime import datetime

from notifier.breaker import Breaker

log = logging.getLogger("notifier.worker")


class ChannelBreaker:
    def __init__(self) -> None:
        # Every trip names its own end (the decision's), so the default pause is never used.
        self._breaker = Breaker(pause_seconds=0)
        self.trips = self._breaker.trips

    def trip(self, channel: str, now: datetime, until: datetime, reason: str) -> None:
        """Pause ``channel`` until ``until``: what ``workers.retry.decide`` decided."""
        _, opened = self._breaker.trip(channel, now, until)
        if opened:
            # ALERT: an operator must fix credentials; the log line is what pages them.
            log.error(
                "ALERT channel %s paused until %s: the provider refused our credentials (%s)",
                channel,
                until.isoformat(),
                reason,
            )

    def paused_until(self, channel: str, now: datetime) -> datetime | None:
        return self._breaker.paused_until(channel, now)
