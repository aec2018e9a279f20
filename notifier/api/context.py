"""What the API needs at run time: built once per process from settings by the composition root
(``runtime/``), which shares it with an in-process worker under ``notifier run``; an app built
without one (``create_app(settings)``) builds its own at startup."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notifier.api.rate_limit import TokenBuckets
from notifier.auth import ApiKeyRing, UserTokens
from notifier.metrics.instruments import ServiceMetrics
from notifier.metrics.recorder import MetricRecorder
from notifier.models.metric import ProgressMetric
from notifier.realtime.fanout import Fanout, FanoutListener, LocalFanout, PostgresFanout
from notifier.realtime.frames import FrameReference, notification_frame_for, task_progress_frame
from notifier.realtime.hub import ConnectionHub
from notifier.settings import Settings
from notifier.storage.db import create_engine, create_session_factory
from notifier.storage.enqueue import PreparedEnqueue
from notifier.storage.enqueue_group import GroupCommit
from notifier.storage.notifications import get_notification
from notifier.storage.tasks import get_task
from notifier.storage.wakeups import Wakeups
from notifier.templates import TemplateRenderer

log = logging.getLogger("notifier.realtime")

# How many frames ``deliver_committed`` remembers for their requests (in flight at once).
_DELIVERED_CAP = 100_000


@dataclass
class ServiceContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    api_keys: ApiKeyRing
    tokens: UserTokens
    hub: ConnectionHub
    fanout: Fanout
    vapid_private_key: str | None = None
    # Makes rows due and wakes the workers, in other processes (NOTIFY) and in this one.
    wakeups: Wakeups = field(default_factory=Wakeups)
    # Renders templates on its own threads; closed with the context.
    renderer: TemplateRenderer = field(default_factory=TemplateRenderer)
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    recorder: MetricRecorder | None = None
    key_limits: TokenBuckets = field(default_factory=lambda: TokenBuckets(rate=0, burst=1))
    recipient_limits: TokenBuckets = field(default_factory=lambda: TokenBuckets(rate=0, burst=1))
    owns_engine: bool = False
    listener: FanoutListener | None = None
    _enqueue_writer: GroupCommit | None = field(default=None, init=False, repr=False)
    # Ids of the frames ``deliver_committed`` handed to the hub, until their request's
    # ``deliver_enqueued`` (insertion order: the oldest go first past ``_DELIVERED_CAP``).
    _delivered: dict[str, None] = field(default_factory=dict, init=False, repr=False)

    @property
    def websocket_grace(self) -> float:
        """The websocket fast path's grace (0: off; docs/architecture.md, "WebSocket fast
        path")."""
        return self.settings.websocket_grace_seconds

    def enqueue_writer(self) -> GroupCommit:
        """This process's group writer of enqueues (made on first use: an engine swapped by a
        test makes a new one), its fast-path frames riding its NOTIFY where the broker is
        PostgreSQL."""
        writer = self._enqueue_writer
        if writer is None or writer.engine is not self.engine:
            writer = self._enqueue_writer = GroupCommit(
                self.engine,
                frame_notify=self.fanout.frame_notify(self.hub.origin),
                on_commit=self.deliver_committed,
            )
        return writer

    def deliver_committed(self, group: PreparedEnqueue) -> None:
        """The fast path's frames of a group the writer just committed, to this process's
        sockets: from the writer itself, before the group's requests resume (each resumption
        is a turn of the event loop, and so was the task per frame scheduled after it: under
        load, ~10 ms each; bench/RESULTS.md "Fast path latency A/B"). Never raises (the group
        is committed); a frame lost here is the worker's to republish once the grace ends."""
        try:
            committed = time.time()
            stages = self.metrics.fast_path
            took_commit = stages.labels(stage="committed").observe
            for row in group.fast_rows:
                took_commit(committed - row["created_at"].timestamp())
            took_write = stages.labels(stage="written").observe

            def written() -> None:
                took_write(time.time() - committed)

            delivered = self._delivered
            for user_id, frame in group.frames:
                delivered[frame["notification"]["id"]] = None
                if self.hub.has_user(user_id):
                    self.hub.deliver_soon(user_id, frame, then=written)
            # Left by requests that never got to ``deliver_enqueued`` (cancelled): a later
            # drop here costs at most a duplicate frame, which clients drop by id.
            while len(delivered) > _DELIVERED_CAP:
                del delivered[next(iter(delivered))]
        except Exception as exc:
            log.warning("could not deliver committed frames: %s", type(exc).__name__)

    async def deliver_enqueued(self, frames: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """The fast path, right after the enqueue's commit: each frame to this process's
        sockets directly (no broker hop) unless the group writer already handed it over
        (``deliver_committed``), and to the other processes through the fan-out unless
        the commit's own NOTIFY carried it there (``Fanout.frame_notify``). A frame lost here
        is the worker's to republish once the grace ends."""
        # Counted where the worker counts its sends, so that the figure covers both paths.
        self.metrics.deliveries.labels(channel="websocket", outcome="sent").inc(len(frames))
        delivered = self._delivered
        for user_id, frame in frames:
            frame_id = frame["notification"]["id"]
            if frame_id in delivered:
                del delivered[frame_id]
                continue
            if self.hub.has_user(user_id):
                self.hub.deliver_soon(user_id, frame)
        if self.enqueue_writer().frame_notify is not None:
            return
        try:
            for user_id, frame in frames:
                await self.fanout.publish(user_id, frame, origin=self.hub.origin)
        except Exception as exc:
            log.warning("could not publish enqueued frames: %s", type(exc).__name__)

    @classmethod
    def from_settings(cls, settings: Settings, *, fanout: Fanout | None = None) -> ServiceContext:
        """``fanout``: the broker the composition root picked (NATS); by default NOTIFY on
        PostgreSQL, the in-process hub on SQLite."""
        if not settings.api_keys:
            raise ValueError("NOTIFIER_API_KEYS is empty: set at least one producer API key")
        if settings.token_secret is None:
            raise ValueError("NOTIFIER_TOKEN_SECRET is not set: user tokens cannot be signed")
        engine = create_engine(settings.database_url)
        hub = ConnectionHub()
        sessions = create_session_factory(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            recorder=MetricRecorder(sessions),
            key_limits=TokenBuckets(
                rate=settings.rate_limit_key_per_second, burst=settings.rate_limit_key_burst
            ),
            recipient_limits=TokenBuckets(
                rate=settings.rate_limit_recipient_per_minute / 60.0,
                burst=settings.rate_limit_recipient_burst,
            ),
            api_keys=ApiKeyRing([k.get_secret_value() for k in settings.api_keys]),
            tokens=UserTokens(
                settings.token_secret.get_secret_value(),
                default_ttl_seconds=settings.token_ttl_seconds,
            ),
            hub=hub,
            fanout=fanout or (LocalFanout(hub) if settings.is_sqlite else PostgresFanout(engine)),
            vapid_private_key=(
                settings.vapid_private_key.get_secret_value()
                if settings.vapid_private_key
                else None
            ),
            owns_engine=True,
        )

    async def _load_frame(self, user_id: str, reference: FrameReference) -> dict[str, Any] | None:
        """The frame a reference from another process stands for (``FrameForwarder``)."""
        async with self.sessions() as session:
            if reference.kind == "notification":
                row = await get_notification(session, uuid.UUID(reference.key))
                if row is None or row.user_id != user_id:
                    return None
                return notification_frame_for(row)
            task = await get_task(session, reference.key)
            if task is None or task.user_id != user_id:
                return None
            frame = task_progress_frame(task)
            return None if reference.superseded_by(frame["task"]) else frame

    async def start(self) -> None:
        """Start the metric recorder, and listening for frames from other processes."""
        if self.recorder is not None and not self.recorder.running:
            self.recorder.before_flush(self._connection_sample)
            self.recorder.start()
        if self.listener is None:
            self.listener = self.fanout.listener(self.hub, self._load_frame)
            if self.listener is not None:
                self.listener.start()

    def _connection_sample(self) -> list[ProgressMetric]:
        return [ProgressMetric.create_websocket_connection_metric(self.hub.connection_count)]

    async def aclose(self) -> None:
        self.renderer.close()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None
        await self.fanout.aclose()
        if self._enqueue_writer is not None:
            await self._enqueue_writer.aclose()  # its held connections, back to the pool
        if self.owns_engine:
            await self.engine.dispose()
