"""Digest windows: join, hold, close (docs/architecture.md, "Digest, throttle and escalation";
the tables' rules are ``notifier/models/digest.py``).

The worker calls ``decide`` at its send decision for a notification with a ``digest`` and a
due email, sms or browser channel, in a transaction of its own:

- not a member yet: it opens the (user, key) window (the unique index lets one opener win) or
  joins the open one (an update of the window row, which waits for a concurrent close and then
  sees it closed). The opener of a ``leading`` window is sent at once; every other member's
  channels are held until ``closes_at``.
- a member whose window is due: the first worker there closes it (``close``); the others find it
  closed. Whatever crashes, the close is one transaction: the window marked closed, the digest
  notification inserted (its ``dedupe_key`` is ``digest:<window id>``, unique: one per window),
  the members' held channels ``digested``.

Membership is decided by ``created_at``, not by which worker got there first: the close also
takes in every notification of the user and key made before ``closes_at`` that no worker has
reached yet (a backlog longer than the window), so a storm made within one window is one
digest however slowly it is claimed. Lock order, everywhere: the window row first (the
conditional update), the notifications after (in id order); ``decide`` never locks a
notification, so a join and a close cannot wait for each other in a cycle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.lifecycle.machine import ChannelChange, ChannelEvent, next_attempt_for
from notifier.models.digest import DigestMember, DigestWindow
from notifier.models.notification import (
    ChannelStatus,
    Notification,
    Priority,
)
from notifier.storage.digest_texts import render_digest
from notifier.storage.notifications import DIGEST_KEY, DISPATCH_WAKEUP_CHANNEL
from notifier.storage.transitions import (
    TransitionRecord,
    advance_channel,
    record_in_session,
    summarize_notification,
)
from notifier.templates import TemplateRenderer

HELD_CHANNELS = ("browser", "email", "sms")  # websocket and the inbox are never held
DIGEST_PREFIX = DIGEST_KEY  # a digest's dedupe_key: ``digest:<window id>``
MAX_EVENTS = 50  # data.events: the oldest 50
MAX_MESSAGE_TITLES = 20  # lines of the plain built-in text
MAX_EVENT_MESSAGE_CHARS = 500  # an event's message in data.events: bounded, as all metadata


@dataclass(frozen=True, slots=True)
class Decision:
    """``send``: go out now (not held); ``held``: wait until ``until``; ``closed``: the window
    is closed, the held channels are ``digested`` (by this worker's close or another's)."""

    kind: Literal["send", "held", "closed"]
    until: datetime | None = None


async def decide(
    session: AsyncSession,
    *,
    notification_id: uuid.UUID,
    user_id: str,
    digest: dict[str, Any],
    created_at: datetime,
    now: datetime,
    waiting: bool,
    renderer: TemplateRenderer | None = None,
) -> Decision:
    """Where this notification stands in its (user, key) window. The caller commits.

    ``waiting``: a held channel was ``pending`` when the caller claimed the row (the claim's
    snapshot; the row is leased to the caller, so only a close can have changed it since, and
    a close makes it a member in the same commit: the member lookup below finds that).

    A window is timed by the notifications' creation (``created_at``), not by when a worker
    reaches them: a storm is one window however long its backlog takes to claim. Only the
    window row is locked here (the joiner's update); ``close`` locks it first and the members
    after, so the two never wait for each other in a cycle."""
    if not waiting:
        return Decision("closed")
    joined = (
        await session.execute(
            # Columns, not the window as an ORM object: one lookup per claim of a held member.
            select(
                DigestWindow.id,
                DigestWindow.closes_at,
                DigestWindow.closed_at,
                DigestMember.leading,
            )
            .join(DigestMember, DigestMember.window_id == DigestWindow.id)
            .where(DigestMember.notification_id == notification_id)
        )
    ).one_or_none()
    if joined is not None:
        window_id, window_closes_at, window_closed_at, leading = joined
        if leading:
            return Decision("send")
        if window_closed_at is None and now < window_closes_at:
            return Decision("held", window_closes_at)
        if window_closed_at is None:
            await close(session, window_id, now, renderer)
        return Decision("closed")
    key, length = digest["key"], timedelta(seconds=digest["window_seconds"])
    # Bounded: each pass opens, joins, or closes an expired window that blocked the way.
    for _ in range(4):
        # Join the open window: the update takes its row lock (and, should a close hold it,
        # waits and then finds it closed: 0 rows, and the open below makes a new one). Tried
        # before the open: in a storm nearly every decide is a join.
        row = (
            await session.execute(
                update(DigestWindow)
                .where(
                    DigestWindow.user_id == user_id,
                    DigestWindow.key == key,
                    DigestWindow.closed_at.is_(None),
                )
                .values(members=DigestWindow.members + 1)
                .returning(DigestWindow.id, DigestWindow.closes_at)
            )
        ).one_or_none()
        if row is not None:
            window_id, closes_at = row
            if closes_at <= created_at:  # made after it ended, and not closed yet: close it
                await close(session, window_id, now, renderer)
                continue
            await _join(session, window_id, notification_id, now, leading=False)
            return Decision("held", closes_at)
        if await _is_member(session, notification_id):
            return Decision("closed")  # a close this update waited for took it in
        closes = created_at + length
        opened = await _open(session, user_id, key, notification_id, created_at, closes)
        if opened is not None and await _is_member(session, notification_id):
            # The open waited for a close that took this notification in (its transaction
            # committed in between): it is digested; the window opened for it is not needed.
            await session.execute(delete(DigestWindow).where(DigestWindow.id == opened))
            return Decision("closed")
        if opened is not None:
            leading = bool(digest.get("leading"))
            await _join(session, opened, notification_id, now, leading=leading)
            return Decision("send") if leading else Decision("held", closes)
    raise RuntimeError(f"no digest window for {user_id!r}/{key!r} after four passes")


async def _open(
    session: AsyncSession,
    user_id: str,
    key: str,
    opener: uuid.UUID,
    now: datetime,
    closes_at: datetime,
) -> uuid.UUID | None:
    name = (await session.connection()).dialect.name
    upsert = postgresql.insert if name == "postgresql" else sqlite.insert
    ident = uuid.uuid4()
    result = await session.execute(
        upsert(DigestWindow)
        .values(
            id=ident,
            user_id=user_id,
            key=key,
            opened_at=now,
            closes_at=closes_at,
            opener_id=opener,
            members=0,
        )
        .on_conflict_do_nothing()
    )
    return ident if result.rowcount else None  # type: ignore[attr-defined]


async def _is_member(session: AsyncSession, notification_id: uuid.UUID) -> bool:
    query = select(DigestMember.window_id).where(DigestMember.notification_id == notification_id)
    return (await session.scalar(query)) is not None


async def _unreached(
    session: AsyncSession, user_id: str, key: str, opened_at: datetime, closes_at: datetime
) -> set[uuid.UUID]:
    """The user's notifications for ``key`` made (and due) before ``closes_at`` that no worker
    has reached yet (not members of any window) and still wait for something. Made earlier than
    one window length before the opener they would have been a window of their own: left out
    (and the scan stays on the (user, created_at) index)."""
    since = opened_at - (closes_at - opened_at)
    plan_key = Notification.delivery_plan["digest"]["key"].as_string()
    query = select(Notification.id).where(
        Notification.user_id == user_id,
        Notification.created_at >= since,
        Notification.created_at < closes_at,
        Notification.next_attempt_at.is_not(None),
        # Scheduled for later (``send_at``): not due at this close; it joins when it is.
        or_(Notification.send_at.is_(None), Notification.send_at < closes_at),
        plan_key == key,
        ~exists().where(DigestMember.notification_id == Notification.id),
    )
    return set((await session.execute(query)).scalars())


async def _join(
    session: AsyncSession,
    window_id: uuid.UUID,
    notification_id: uuid.UUID,
    now: datetime,
    *,
    leading: bool,
) -> None:
    # A core insert, not an ORM object and a flush: one per held member of a storm.
    await session.execute(
        insert(DigestMember).values(
            window_id=window_id, notification_id=notification_id, joined_at=now, leading=leading
        )
    )


def _held(notification: Notification) -> list[Any]:
    return [
        d
        for d in notification.deliveries
        if d.channel in HELD_CHANNELS and d.status == ChannelStatus.PENDING.value
    ]


async def _lock(session: AsyncSession, ids: set[uuid.UUID]) -> list[Notification]:
    if not ids:
        return []
    query = (
        select(Notification)
        .where(Notification.id.in_(sorted(ids)))
        .order_by(Notification.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(query)).scalars())


async def close(
    session: AsyncSession,
    window_id: uuid.UUID,
    now: datetime,
    renderer: TemplateRenderer | None = None,
) -> uuid.UUID | None:
    """Close the window, once: the digest notification's id, or None when another closer won
    or nothing was held (every member cancelled, or a leading opener alone). The caller
    commits; everything here is one transaction: the conditional update that marks the window
    closed takes its row lock first (a joiner waits, then finds it closed), then the members'
    rows are locked in id order, as every batch writer locks them. With a ``renderer`` the
    digest's text is its template's (``storage/digest_texts.py``), else the plain text."""
    won = await session.execute(
        update(DigestWindow)
        .where(DigestWindow.id == window_id, DigestWindow.closed_at.is_(None))
        .values(closed_at=now)
        .returning(
            DigestWindow.user_id, DigestWindow.key, DigestWindow.opened_at, DigestWindow.closes_at
        )
    )
    row = won.one_or_none()
    if row is None:
        return None
    user_id, key, opened_at, closes_at = row
    members_of = select(DigestMember.notification_id).where(
        DigestMember.window_id == window_id, DigestMember.leading.is_(False)
    )
    joined = set((await session.execute(members_of)).scalars())
    unreached = await _unreached(session, user_id, key, opened_at, closes_at) - joined
    locked = await _lock(session, joined | unreached)
    members = [m for m in locked if _held(m)]
    # Members from now on (the unique notification_id): their workers find them digested.
    session.add_all(
        DigestMember(window_id=window_id, notification_id=m.id, joined_at=now, leading=False)
        for m in members
        if m.id in unreached
    )
    if not members:
        return None
    members.sort(key=lambda m: (m.created_at, m.id))
    channels = sorted({d.channel for m in members for d in _held(m)})
    digest = _digest_notification(user_id, key, members, channels, window_id, now)
    if renderer is not None:
        await render_digest(session, renderer, digest, key)
    session.add(digest)
    await session.flush()
    records: list[TransitionRecord] = []
    change = ChannelChange(ChannelEvent.DIGESTED, provider_id=f"{DIGEST_PREFIX}{digest.id}")
    for member in members:
        for delivery in _held(member):
            advance_channel(member, delivery, change, now, records)
        summarize_notification(member, now, records, leased=False)
        member.next_attempt_at = next_attempt_for(member, now)
    await session.execute(
        update(DigestWindow)
        .where(DigestWindow.id == window_id)
        .values(digest_id=digest.id, members=DigestWindow.members + len(unreached))
    )
    await record_in_session(session, records, None)
    if (await session.connection()).dialect.name == "postgresql":
        # The digest is due now: wake the workers on commit rather than at their next poll.
        await session.execute(select(func.pg_notify(DISPATCH_WAKEUP_CHANNEL, "")))
    return digest.id


def _digest_notification(
    user_id: str,
    key: str,
    members: list[Notification],
    channels: list[str],
    window_id: uuid.UUID,
    now: datetime,
) -> Notification:
    """The ONE digest: plain built-in text (``data.count`` and ``data.events`` in its
    metadata for a template to use), read already so that it is neither unread nor listed
    (the inbox leaves out ``digest:`` rows; its members are listed)."""
    count = len(members)
    events = [
        {
            "id": str(m.id),
            "title": m.title,
            "message": m.message[:MAX_EVENT_MESSAGE_CHARS],
            "created_at": m.created_at.isoformat(),
        }
        for m in members[:MAX_EVENTS]
    ]
    lines = [f"- {m.title}" for m in members[:MAX_MESSAGE_TITLES]]
    if count > MAX_MESSAGE_TITLES:
        lines.append(f"… and {count - MAX_MESSAGE_TITLES} more")
    rank = min(members, key=lambda m: m.priority_rank).priority
    digest = Notification.build(
        user_id=user_id,
        title=f"{count} new notification{'s' if count != 1 else ''} ({key})"[:200],
        message="\n".join(lines),
        priority=Priority(rank),
        channels=channels,
        metadata={
            "digest": {"key": key, "count": count, "members": [str(m.id) for m in members]},
            "data": {"count": count, "events": events},
        },
        dedupe_key=f"{DIGEST_PREFIX}{window_id}",
        now=now,
    )
    digest.is_read = True
    digest.read_at = now
    return digest


async def window_count(session: AsyncSession, user_id: str, key: str) -> int:
    """Windows ever opened for (user, key) (tests and the console)."""
    query = select(func.count()).where(DigestWindow.user_id == user_id, DigestWindow.key == key)
    return int((await session.execute(query)).scalar_one())
