"""Recipient rules, applied before a channel is tried: where to send, and whether to send now.

- The address comes from the notification's ``recipient`` override, else the stored Recipient.
- ``skipped`` (with the reason in ``last_error``): channel not configured; the recipient opted
  out of the channel (``preferences["channels"][channel] is False``) or of this channel for this
  notification type (``preferences["types"][type][channel] is False``); SMS after the number
  replied STOP at Twilio (21610).
- Quiet hours (``quiet_hours = {"start": "22:00", "end": "07:00", "defer": false}`` in the
  recipient's time zone) hold back the channels whose ``ChannelSpec`` says so (email, SMS and
  push), never the in-app websocket and never an ``urgent`` notification. By default such a
  channel is ``skipped`` ("quiet hours"); with ``"defer": true`` on the recipient, or
  ``metadata.quiet_hours = "defer"`` on the notification, it waits until the window ends
  instead.
Missing addresses are the channels' own call (``NotDeliverable`` → ``skipped``).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from notifier.channels.base import Destination, OutgoingMessage, PushTarget
from notifier.channels.registry import CHANNELS
from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.notification import Channel, ChannelStatus, Priority
from notifier.models.recipient import PushSubscription, Recipient
from notifier.storage.dispatch import ClaimedDelivery, ClaimedNotification, ClaimedWork
from workers.outcomes import outgoing, unprepared


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class ToSend:
    """A due channel to be sent now: the message and where it goes."""

    message: OutgoingMessage
    destination: Destination


@dataclass(frozen=True, slots=True)
class NotSent:
    """A due channel not to be sent: the outcome to record instead, and the status to observe
    (None: not observed, as a deferral is not an outcome)."""

    change: ChannelChange
    status: ChannelStatus | None


def prepare(
    work: ClaimedWork, delivery: ClaimedDelivery, *, configured: bool, now: datetime
) -> ToSend | NotSent:
    """A due channel decided (``precheck``) and, if it is to be sent, prepared. Skipped or
    deferred by the rules; ``failed`` if deciding or preparing raised (the same stored data
    fails the same way on every claim: ``workers/delivery.py``)."""
    notification = work.notification
    try:
        verdict = precheck(
            delivery.channel, notification, work.recipient, configured=configured, now=now
        )
        if verdict is None:
            return ToSend(
                outgoing(notification, delivery),
                destination_for(notification, work.recipient, work.push_subscriptions),
            )
    except Exception as exc:
        return NotSent(unprepared(delivery.channel, notification, exc), ChannelStatus.FAILED)
    if isinstance(verdict, Skip):
        change = ChannelChange(ChannelEvent.SKIPPED, last_error=verdict.reason)
        return NotSent(change, ChannelStatus.SKIPPED)
    change = ChannelChange(
        ChannelEvent.DEFERRED, last_error=verdict.reason, next_attempt_at=verdict.until
    )
    return NotSent(change, None)


def destination_for(
    notification: ClaimedNotification,
    recipient: Recipient | None,
    subscriptions: tuple[PushSubscription, ...],
) -> Destination:
    override = notification.recipient or {}
    return Destination(
        user_id=notification.user_id,
        email=override.get("email") or (recipient.email if recipient else None),
        phone=override.get("phone") or (recipient.phone if recipient else None),
        locale=recipient.locale if recipient else None,
        push_targets=tuple(PushTarget(s.endpoint, s.p256dh, s.auth) for s in subscriptions),
    )


def precheck(
    channel: str,
    notification: ClaimedNotification,
    recipient: Recipient | None,
    *,
    configured: bool,
    now: datetime,
) -> Skip | Defer | None:
    """None when the channel may be tried now."""
    if not configured:
        return Skip("channel not configured")
    if recipient is None:
        return None
    preferences = recipient.preferences or {}
    channel_prefs = preferences.get("channels", {})
    if isinstance(channel_prefs, dict) and channel_prefs.get(channel) is False:
        return Skip(f"recipient opted out of {channel}")
    type_prefs = preferences.get("types", {}).get(notification.notification_type, {})
    if isinstance(type_prefs, dict) and type_prefs.get(channel) is False:
        return Skip(f"recipient opted out of {channel} for {notification.notification_type}")
    if channel == Channel.SMS.value and recipient.sms_opted_out:
        return Skip("recipient opted out of SMS (replied STOP)")
    return _quiet_hours(channel, notification, recipient, now)


def _quiet_hours(
    channel: str, notification: ClaimedNotification, recipient: Recipient, now: datetime
) -> Skip | Defer | None:
    window = recipient.quiet_hours
    spec = CHANNELS.get(channel)
    if not window or spec is None or not spec.quiet_hours:
        return None
    if notification.priority == Priority.URGENT:
        return None
    tz = zoneinfo.ZoneInfo(recipient.timezone or "UTC")
    end_local = quiet_window_end(now.astimezone(tz), window["start"], window["end"])
    if end_local is None:
        return None
    defer = (
        window.get("defer")
        or (notification.notification_metadata or {}).get("quiet_hours") == "defer"
    )
    if defer:
        return Defer(end_local.astimezone(now.tzinfo), "deferred: quiet hours")
    return Skip("quiet hours")


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def quiet_window_end(local_now: datetime, start: str, end: str) -> datetime | None:
    """If ``local_now`` lies in the daily window [start, end), when the window ends.

    The window is wall-clock time in ``local_now``'s zone. Where DST repeats an hour, an end
    inside the repeated hour is its occurrence after ``local_now``, never one already past.
    """
    start_t, end_t = _hhmm(start), _hhmm(end)
    if start_t == end_t:
        return None
    today = local_now.date()
    clock = local_now.timetz().replace(tzinfo=None)
    if start_t < end_t:  # same-day window, e.g. 12:00-14:00
        if start_t <= clock < end_t:
            return _after(local_now, datetime.combine(today, end_t, local_now.tzinfo))
        return None
    # Window across midnight, e.g. 22:00-07:00.
    if clock >= start_t:
        return _after(
            local_now, datetime.combine(today + timedelta(days=1), end_t, local_now.tzinfo)
        )
    if clock < end_t:
        return _after(local_now, datetime.combine(today, end_t, local_now.tzinfo))
    return None


def _after(local_now: datetime, end: datetime) -> datetime:
    # Aware datetimes that share a tzinfo compare by wall clock (fold ignored): compare instants.
    if end.timestamp() <= local_now.timestamp():
        return end.replace(fold=1)
    return end
