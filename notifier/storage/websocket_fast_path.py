"""The websocket fast path at enqueue (docs/architecture.md, "WebSocket fast path").

The enqueue's own statement records the websocket channel ``sent`` (one attempt), with its
``notification_transitions`` row and its ``notification.sent`` webhook event (and
``notification.settled`` when websocket was the only channel), and a ``next_attempt_at`` =
now + ``NOTIFIER_WEBSOCKET_GRACE_SECONDS``: the worker republishes the frame once then, if no
client acked it (``ChannelEvent.REPUBLISHED``, no attempt counted). Right after the commit the
API delivers the frame to its own sockets and, through the fan-out, to the other API processes.

The change goes through the state machine (``transitions.advance_channel``,
``summarize_notification``), as every channel's change does. What the fast path does not take:

- a notification with a ``send_at`` or a ``delivery_plan`` (digest, throttle and
  escalation are the worker's decisions);
- a recipient who opted out of websocket (``preferences.channels.websocket`` or
  ``preferences.types.<type>.websocket`` false, as ``workers/rules.py`` reads them): the
  statement checks it (``OPTED_OUT_SQL``) and refuses, and the writer writes those rows as
  before, for the worker to skip (``fall_back``: the only case that costs round trips more).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.lifecycle.machine import ChannelChange, ChannelEvent, Transition, next_attempt_for
from notifier.models.base import iso
from notifier.models.notification import Channel, ChannelStatus, NotificationStatus
from notifier.models.shape import FRAME_FIELDS, api_time
from notifier.storage.driver import json_rows
from notifier.storage.transitions import (
    TransitionRecord,
    advance_channel,
    summarize_notification,
)

WEBSOCKET = Channel.WEBSOCKET.value


@dataclass(frozen=True, slots=True)
class FrameNotify:
    """How the enqueue's own transaction carries the fast path's frames to the other API
    processes: a NOTIFY on ``channel`` with ``payload(user_id, frame)`` (the PostgreSQL
    fan-out's message, naming the publishing process so that it skips its own)."""

    channel: str
    payload: Callable[[str, dict[str, Any]], str]


# The fast-path notifications whose recipient opted out of websocket (arrays ``f_*``).
OPTED_OUT_SQL = """
        SELECT f.id, f.user_id FROM unnest(
            CAST(:f_id AS uuid[]), CAST(:f_user_id AS text[]), CAST(:f_type AS text[])
        ) AS f(id, user_id, notification_type)
        JOIN recipients AS r ON r.user_id = f.user_id
        WHERE r.preferences -> 'channels' -> 'websocket' = 'false'::jsonb
           OR r.preferences -> 'types' -> f.notification_type -> 'websocket' = 'false'::jsonb"""


def opted_out(preferences: dict[str, Any] | None, notification_type: str) -> bool:
    """``OPTED_OUT_SQL`` for one recipient, in Python (SQLite)."""
    preferences = preferences or {}
    channels = preferences.get("channels", {})
    if isinstance(channels, dict) and channels.get(WEBSOCKET) is False:
        return True
    types = preferences.get("types", {})
    for_type = types.get(notification_type, {}) if isinstance(types, dict) else {}
    return isinstance(for_type, dict) and for_type.get(WEBSOCKET) is False


@dataclass(slots=True)
class _Channel:
    """A new delivery row as the machine reads it (``ChannelState``)."""

    channel: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    updated_at: datetime
    last_error: str | None = None
    provider_id: str | None = None
    unknown_outcomes: int = 0


@dataclass(slots=True)
class _Notification:
    """A new notification as the machine reads it (``TrackedNotification``)."""

    id: uuid.UUID
    user_id: str
    send_at: datetime | None
    created_at: datetime
    expires_at: datetime | None
    status: str
    retry_count: int
    updated_at: datetime
    deliveries: list[_Channel] = field(default_factory=list)


def eligible(row: dict[str, Any]) -> bool:
    """Whether ``row`` (``new_row_values``) may take the fast path."""
    # A ``send_at``, even a past one, is the worker's: its latencies run from it.
    return WEBSOCKET in row["channels"] and row["delivery_plan"] is None and row["send_at"] is None


@dataclass(frozen=True, slots=True)
class _Published:
    """What the machine makes of ``PUBLISHED`` on a new notification with these channels."""

    status: str
    retry_count: int
    channel_status: str
    attempts: int
    republish_is_next: bool  # no other channel waits: the notification is due at the republish
    transitions: tuple[tuple[Transition, bool], ...]  # each with: the channel's first success
    # The transitions as ``transitions.pg_record_params``' rows have them (``_RECORD_CTES``'
    # order), less the notification's id and user and the time: (kind, channel, from, to,
    # attempts, latency).
    rows: tuple[tuple[str | int | None, ...], ...]


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=64)
def _published(channels: tuple[str, ...]) -> _Published:
    """The machine run once per set of channels, on a stand-in row: a new row's channels are
    all ``pending`` with nothing due, so the outcome depends on its channels alone (the row's
    id and times are filled in by ``mark_sent``). Saves the per-row machine on a 1000-row
    batch."""
    state = _Notification(
        uuid.UUID(int=0),
        "",
        None,
        _EPOCH,
        None,
        NotificationStatus.PENDING.value,
        0,
        _EPOCH,
        [_Channel(c, ChannelStatus.PENDING.value, 0, None, _EPOCH) for c in channels],
    )
    websocket = next(c for c in state.deliveries if c.channel == WEBSOCKET)
    republish = _EPOCH + timedelta(seconds=1)
    change = ChannelChange(ChannelEvent.PUBLISHED, attempts=1, next_attempt_at=republish)
    records: list[TransitionRecord] = []
    advance_channel(state, websocket, change, _EPOCH, records)
    summarize_notification(state, _EPOCH, records, leased=False, settled_in_sql=True)
    return _Published(
        state.status,
        state.retry_count,
        websocket.status,
        websocket.attempts,
        next_attempt_for(state, _EPOCH) == republish,
        tuple((r.transition, r.latency_ms is not None) for r in records),
        tuple(
            (
                (t := r.transition).kind,
                t.channel,
                t.from_status,
                t.to_status,
                websocket.attempts if t.channel is not None else None,
                0 if r.latency_ms is not None else None,
            )
            for r in records
        ),
    )


def mark_sent(
    row: dict[str, Any], deliveries: list[dict[str, Any]], *, grace: float, now: datetime
) -> None:
    """Record ``row``'s websocket channel ``sent`` through the machine (``_published``), its
    republish due after ``grace`` seconds: ``row``, its ``deliveries`` and its public
    ``delivery_status`` take the result. Its transitions are ``_published``'s for its channels
    too (``transitions_json``, ``transition_records``): no per-row objects for them."""
    outcome = _published(tuple(row["channels"]))
    republish = now + timedelta(seconds=grace)
    row["status"] = outcome.status
    row["retry_count"] = outcome.retry_count
    row["next_attempt_at"] = republish if outcome.republish_is_next else now
    for delivery in deliveries:
        if delivery["channel"] == WEBSOCKET:
            delivery["status"] = outcome.channel_status
            delivery["attempts"] = outcome.attempts
            delivery["next_attempt_at"] = republish
    public = row["delivery_status"]
    public[WEBSOCKET] = {
        **public[WEBSOCKET],
        "status": outcome.channel_status,
        "attempts": outcome.attempts,
        "next_attempt_at": api_time(republish),
    }


def transitions_json(rows: Iterable[dict[str, Any]]) -> str:
    """The transitions of the fast-path ``rows`` (``mark_sent``) as ``pg_record_params``'
    ``transitions`` parameter, straight from the rows: at ``created_at`` (the row's now), the
    first success's latency 0 (the row is due at its creation). ``notification.settled``'s
    event is the statement's (``enqueue_sql``)."""
    return json_rows(
        (row["id"], row["user_id"], *transition, row["created_at"], None, None)
        for row in rows
        for transition in _published(tuple(row["channels"])).rows
    )


def transition_records(
    rows: Iterable[dict[str, Any]], deliveries: Iterable[dict[str, Any]]
) -> list[TransitionRecord]:
    """``transitions_json``'s transitions as records, for the writer that builds their events
    in Python (SQLite's ``record_transitions``): ``notification.settled`` with its
    ``delivery_status`` from the notification's ``deliveries`` as written."""
    status: dict[uuid.UUID, dict[str, dict[str, Any]]] = {}
    for d in deliveries:
        status.setdefault(d["notification_id"], {})[d["channel"]] = {
            "status": d["status"],
            "attempts": d["attempts"],
            "last_error": d["last_error"],
            "provider_id": d["provider_id"],
            "next_attempt_at": iso(d["next_attempt_at"]),
            "updated_at": iso(d["updated_at"]),
        }
    records = []
    for row in rows:
        ident, now = row["id"], row["created_at"]
        outcome = _published(tuple(row["channels"]))
        for transition, first_success in outcome.transitions:
            channel_kind = transition.channel is not None
            records.append(
                TransitionRecord(
                    ident,
                    row["user_id"],
                    transition,
                    now,
                    attempts=outcome.attempts if channel_kind else None,
                    latency_ms=0 if first_success else None,
                    delivery_status=None if channel_kind else status.get(ident),
                )
            )
    return records


def frame_of(public: dict[str, Any]) -> dict[str, Any]:
    """The websocket frame of a new notification, from the API's answer for it: the frame the
    worker and the replay send for the row (``models/shape.py`` FRAME_FIELDS)."""
    return {"type": "notification", "notification": {f: public[f] for f in FRAME_FIELDS}}


def fall_back(
    row: dict[str, Any], deliveries: Iterable[dict[str, Any]], public: dict[str, Any]
) -> None:
    """Undo ``mark_sent``: the row as a plain enqueue writes it, for the worker (which skips the
    opted-out channel). ``public`` is the answer already built for it."""
    row["status"] = NotificationStatus.PENDING.value
    row["retry_count"] = 0
    row["next_attempt_at"] = row["created_at"]
    for delivery in deliveries:
        if delivery["channel"] == WEBSOCKET:
            delivery.update(status=ChannelStatus.PENDING.value, attempts=0, next_attempt_at=None)
    public["status"] = NotificationStatus.PENDING.value
    public["retry_count"] = 0
    public["delivery_status"][WEBSOCKET] = {
        **public["delivery_status"][WEBSOCKET],
        "status": ChannelStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": None,
    }
