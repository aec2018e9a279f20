"""The operator console's figures (docs/architecture.md, "Operator console"), computed in the
database so that every API instance shows the same.

Two queries per refresh:

- the window: the ``notification_transitions`` rows of the last ``window_seconds`` (a range
  scan of the partial index ``idx_transitions_console``), grouped by channel and step, counting the
  channel statuses entered and, from the rows that carry a ``latency_ms`` (a channel's first
  ``sent``/``delivered``), the p50/p95/p99 of due → sent;
- the queue now: the channels still waiting to be sent, by channel and status (the partial
  indexes ``idx_notification_deliveries_awaiting`` and ``idx_notifications_due``), so a million
  settled rows cost nothing.

PostgreSQL computes the percentiles itself (``percentile_cont``, linear interpolation). SQLite
has no percentile aggregate: it hands the step's latencies over (``group_concat``) and
``percentile`` below interpolates the same way, so both databases give the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Interval, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.base import UTCDateTime, utcnow
from notifier.models.transition import CONSOLE_KINDS

# Channel statuses the console counts, each a series of its own.
COUNTED = ("sent", "delivered", "failed", "skipped")
PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
QUEUE_STATES = ("pending", "retrying", "in_flight")
MIN_WINDOW_SECONDS = 60
MAX_WINDOW_SECONDS = 86_400
# Points per series: 60 one-minute steps for the default hour, 60 steps for any window.
POINTS = 60


@dataclass(frozen=True, slots=True)
class StatsWindow:
    """Steps aligned to multiples of ``step_seconds`` since the epoch, the last one holding
    ``now``: a refresh a few seconds later shows the same steps, only the last one grown."""

    window_seconds: int
    step_seconds: int
    first_step: int  # epoch seconds // step_seconds of the oldest step

    @classmethod
    def ending(cls, window_seconds: int, now: datetime) -> StatsWindow:
        if not MIN_WINDOW_SECONDS <= window_seconds <= MAX_WINDOW_SECONDS:
            raise ValueError(f"window_seconds must be {MIN_WINDOW_SECONDS}-{MAX_WINDOW_SECONDS}")
        step = max(1, math.ceil(window_seconds / POINTS))
        steps = math.ceil(window_seconds / step)
        last = int(now.timestamp()) // step
        return cls(window_seconds, step, last - steps + 1)

    @property
    def steps(self) -> int:
        return math.ceil(self.window_seconds / self.step_seconds)

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.first_step * self.step_seconds, UTC)

    @property
    def timestamps(self) -> list[int]:
        return [(self.first_step + i) * self.step_seconds for i in range(self.steps)]


@dataclass(slots=True)
class ChannelSeries:
    """One channel's series (one value per step) and its queue now."""

    counts: dict[str, list[int]]
    latency_ms: dict[str, list[float | None]]
    queue: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUEUE_STATES, 0))

    @classmethod
    def empty(cls, steps: int) -> ChannelSeries:
        return cls(
            counts={status: [0] * steps for status in COUNTED},
            latency_ms={name: [None] * steps for name, _ in PERCENTILES},
        )


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    window: StatsWindow
    channels: dict[str, ChannelSeries]


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """``percentile_cont``'s definition: linear interpolation between the closest ranks."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return float(sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * weight)


# Both windows filter with CONSOLE_KINDS as written in the partial index idx_transitions_console,
# so that the planner uses it. On PostgreSQL that index carries every column read here: an
# index-only scan, no table access (bench/RESULTS.md, "Operator console stats"). date_bin keeps
# the step arithmetic on timestamps (extract(epoch) is numeric: slower to compute and to sort).
PG_WINDOW = text(
    f"""
    SELECT channel,
           date_bin(:step, occurred_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS step,
           count(*) FILTER (WHERE kind = 'channel.sent') AS sent,
           count(*) FILTER (WHERE kind = 'channel.delivered') AS delivered,
           count(*) FILTER (WHERE kind = 'channel.failed') AS failed,
           count(*) FILTER (WHERE kind = 'channel.skipped') AS skipped,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms)
               AS latency
    FROM notification_transitions
    WHERE occurred_at >= :start AND {CONSOLE_KINDS}
    GROUP BY 1, 2
    """
).bindparams(bindparam("step", type_=Interval()), bindparam("start", type_=UTCDateTime()))

# SQLite stores the times as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC: strftime('%s') reads them.
SQLITE_WINDOW = text(
    f"""
    SELECT channel,
           CAST(strftime('%s', occurred_at) AS INTEGER) / :step AS step,
           kind,
           count(*) AS n,
           group_concat(latency_ms) AS latencies
    FROM notification_transitions
    WHERE occurred_at >= :start AND {CONSOLE_KINDS}
    GROUP BY 1, 2, 3
    """
).bindparams(bindparam("start", type_=UTCDateTime()))

# A channel waiting to be sent is in flight while it is due and a worker holds its
# notification's lease; one whose next attempt is later stays retrying (or pending) meanwhile.
QUEUE = text(
    """
    SELECT d.channel,
           CASE WHEN n.lease_owner IS NOT NULL AND n.lease_expires_at > :now
                     AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= :now)
                THEN 'in_flight' ELSE d.status END AS state,
           count(*) AS n
    FROM notifications AS n
    JOIN notification_deliveries AS d ON d.notification_id = n.id
    WHERE n.next_attempt_at IS NOT NULL AND d.status IN ('pending', 'retrying')
    GROUP BY 1, 2
    """
).bindparams(bindparam("now", type_=UTCDateTime()))


class _Collector:
    """The series of one refresh, filled from the query rows."""

    def __init__(self, window: StatsWindow, channels: Iterable[str]) -> None:
        self.window = window
        self.series = {name: ChannelSeries.empty(window.steps) for name in channels}

    def of(self, channel: str) -> ChannelSeries:
        if channel not in self.series:
            self.series[channel] = ChannelSeries.empty(self.window.steps)
        return self.series[channel]

    def index(self, step: int) -> int | None:
        index = step - self.window.first_step
        return index if 0 <= index < self.window.steps else None

    async def read_postgres(self, session: AsyncSession, start: datetime) -> None:
        step = timedelta(seconds=self.window.step_seconds)
        for row in await session.execute(PG_WINDOW, {"step": step, "start": start}):
            index = self.index(int(row.step.timestamp()) // self.window.step_seconds)
            if index is None:
                continue
            target = self.of(row.channel)
            for status in COUNTED:
                target.counts[status][index] = int(getattr(row, status))
            for (name, _), value in zip(PERCENTILES, row.latency or (), strict=False):
                target.latency_ms[name][index] = None if value is None else float(value)

    async def read_sqlite(self, session: AsyncSession, start: datetime) -> None:
        latencies: dict[tuple[str, int], list[int]] = {}
        params = {"step": self.window.step_seconds, "start": start}
        for row in await session.execute(SQLITE_WINDOW, params):
            index = self.index(int(row.step))
            if index is None:
                continue
            self.of(row.channel).counts[row.kind.removeprefix("channel.")][index] = int(row.n)
            if row.latencies:
                values = latencies.setdefault((row.channel, index), [])
                values.extend(int(v) for v in str(row.latencies).split(","))
        for (channel, index), values in latencies.items():
            values.sort()
            for name, fraction in PERCENTILES:
                self.series[channel].latency_ms[name][index] = percentile(values, fraction)


async def delivery_stats(
    session: AsyncSession,
    window_seconds: int,
    *,
    channels: Iterable[str] = (),
    now: datetime | None = None,
) -> DeliveryStats:
    """The console's series over the window ending ``now``, for ``channels`` (every one named
    gets its series, zeros included) and any other channel that has rows in it."""
    now = now or utcnow()
    window = StatsWindow.ending(window_seconds, now)
    collector = _Collector(window, channels)
    if session.get_bind().dialect.name == "postgresql":
        # The window's sort holds every counted row of the window (40k for an hour at 1M
        # notifications a day): with the default 4 MB it spilled to disk. For this
        # transaction only.
        await session.execute(text("SET LOCAL work_mem = '32MB'"))
        await collector.read_postgres(session, window.start)
    else:
        await collector.read_sqlite(session, window.start)
    for row in await session.execute(QUEUE, {"now": now}):
        collector.of(row.channel).queue[row.state] = int(row.n)
    return DeliveryStats(window, collector.series)
