"""Recipient rules end to end: missing addresses, unconfigured channels, preferences and quiet
hours decide ``skipped`` (or a deferral) before any peer is contacted."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.peers import TwilioPeer

ZONE = "Pacific/Auckland"  # far from UTC, with DST: the window must be read in this zone


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def window_around_now(zone: str) -> dict[str, Any]:
    """A quiet-hours window that contains the present moment in ``zone``."""
    local = datetime.now(UTC).astimezone(zoneinfo.ZoneInfo(zone))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=2)).strftime("%H:%M")
    return {"start": start, "end": end}


def window_elsewhere(zone: str) -> dict[str, Any]:
    """A window that does not contain now in ``zone`` (but would in UTC-ish zones' reading)."""
    local = datetime.now(UTC).astimezone(zoneinfo.ZoneInfo(zone))
    start = (local + timedelta(hours=3)).strftime("%H:%M")
    end = (local + timedelta(hours=5)).strftime("%H:%M")
    return {"start": start, "end": end}


async def test_missing_addresses_are_skipped(
    db_url: str, smtp_peer: DispatchSmtpPeer, twilio_peer: TwilioPeer
) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings(), **twilio_peer.settings()) as stack:
        await stack.put_recipient(user, locale="en")  # a profile, but no email and no phone
        created = await stack.notify(
            user_id=user, title="t", message="m", channels=["email", "sms", "browser"]
        )
        body = await stack.wait_settled(created["id"])
        # No profile at all.
        stranger = await stack.notify(
            user_id=new_user(), title="t", message="m", channels=["email"]
        )
        stranger_body = await stack.wait_settled(stranger["id"])

    status = body["delivery_status"]
    assert status["email"]["status"] == "skipped"
    assert status["email"]["last_error"] == "no email address"
    assert status["sms"]["status"] == "skipped"
    assert status["sms"]["last_error"] == "no phone number"
    # Push has no VAPID key in this stack: that is a configuration matter.
    assert status["browser"]["status"] == "skipped"
    assert status["browser"]["last_error"] == "channel not configured"
    assert body["status"] == "skipped"  # nothing went out: not to be read as delivered
    assert stranger_body["delivery_status"]["email"]["last_error"] == "no email address"
    assert stranger_body["status"] == "skipped"
    assert smtp_peer.connections == 0 and smtp_peer.rcpts == []
    assert twilio_peer.posts == 0


async def test_unconfigured_channels_are_skipped(db_url: str) -> None:
    user = new_user()
    async with running_stack(db_url) as stack:  # no SMTP, Twilio or VAPID settings
        await stack.put_recipient(user, email="a@example.com", phone="+15005550030")
        created = await stack.notify(
            user_id=user, title="t", message="m", channels=["email", "sms", "browser", "websocket"]
        )
        body = await stack.wait_settled(created["id"])

    for channel in ("email", "sms", "browser"):
        assert body["delivery_status"][channel]["status"] == "skipped", channel
        assert body["delivery_status"][channel]["last_error"] == "channel not configured"
    assert body["delivery_status"]["websocket"]["status"] == "sent"
    assert body["status"] == "delivered"


async def test_preferences_opt_out(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(
            user,
            email="pref@example.com",
            preferences={"channels": {"email": False}},
        )
        off = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
        off_body = await stack.wait_settled(off["id"])

        other = new_user()
        await stack.put_recipient(
            other,
            email="types@example.com",
            preferences={"types": {"warning": {"email": False}}},
        )
        warning = await stack.notify(
            user_id=other, title="w", message="m", notification_type="warning", channels=["email"]
        )
        warning_body = await stack.wait_settled(warning["id"])
        info = await stack.notify(user_id=other, title="i", message="m", channels=["email"])
        info_body = await stack.wait_settled(info["id"])

    assert off_body["delivery_status"]["email"]["status"] == "skipped"
    assert off_body["delivery_status"]["email"]["last_error"] == "recipient opted out of email"
    assert warning_body["delivery_status"]["email"]["status"] == "skipped"
    assert (
        "opted out of email for warning" in warning_body["delivery_status"]["email"]["last_error"]
    )
    assert info_body["delivery_status"]["email"]["status"] == "delivered"
    assert [m.rcpt_tos for m in smtp_peer.messages] == [["types@example.com"]]


async def test_quiet_hours_skip_defer_and_urgent(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    skip_user, defer_user, calm_user = new_user(), new_user(), new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        quiet = window_around_now(ZONE)
        await stack.put_recipient(
            skip_user, email="skip@example.com", timezone=ZONE, quiet_hours=quiet
        )
        await stack.put_recipient(
            defer_user,
            email="defer@example.com",
            timezone=ZONE,
            quiet_hours={**quiet, "defer": True},
        )
        # The same clock times, read in another zone, are not quiet now.
        await stack.put_recipient(
            calm_user, email="calm@example.com", timezone=ZONE, quiet_hours=window_elsewhere(ZONE)
        )
        skipped = await stack.notify(
            user_id=skip_user, title="s", message="m", channels=["email", "websocket"]
        )
        deferred = await stack.notify(
            user_id=defer_user, title="d", message="m", channels=["email"]
        )
        # Per notification: defer rather than skip.
        asked = await stack.notify(
            user_id=skip_user,
            title="a",
            message="m",
            channels=["email"],
            metadata={"quiet_hours": "defer"},
        )
        urgent = await stack.notify(
            user_id=skip_user, title="u", message="m", priority="urgent", channels=["email"]
        )
        calm = await stack.notify(user_id=calm_user, title="c", message="m", channels=["email"])

        skipped_body = await stack.wait_settled(skipped["id"])
        urgent_body = await stack.wait_settled(urgent["id"])
        calm_body = await stack.wait_settled(calm["id"])
        deferred_body = await stack.wait_until(
            deferred["id"], lambda n: n["delivery_status"]["email"]["last_error"] is not None
        )
        asked_body = await stack.wait_until(
            asked["id"], lambda n: n["delivery_status"]["email"]["last_error"] is not None
        )

    assert skipped_body["delivery_status"]["email"]["status"] == "skipped"
    assert skipped_body["delivery_status"]["email"]["last_error"] == "quiet hours"
    assert skipped_body["delivery_status"]["websocket"]["status"] == "sent"  # in-app is never quiet
    assert urgent_body["delivery_status"]["email"]["status"] == "delivered"
    assert calm_body["delivery_status"]["email"]["status"] == "delivered"

    # The window's end as the recipient rows store it ("HH:MM", today or, past midnight, the next
    # day), not recomputed from a clock that may have crossed a minute since.
    local_now = datetime.now(UTC).astimezone(zoneinfo.ZoneInfo(ZONE))
    end_clock = datetime.strptime(quiet["end"], "%H:%M").time()
    window_end = local_now.replace(
        hour=end_clock.hour, minute=end_clock.minute, second=0, microsecond=0
    )
    if window_end < local_now:
        window_end += timedelta(days=1)
    for body in (deferred_body, asked_body):
        email = body["delivery_status"]["email"]
        assert email["status"] == "pending"
        assert email["last_error"] == "deferred: quiet hours"
        assert email["attempts"] == 0
        due = datetime.fromisoformat(email["next_attempt_at"])
        assert abs(due - window_end) < timedelta(minutes=1)
        assert body["status"] == "pending"
    # Only the urgent and the calm ones reached the peer.
    assert sorted(r for m in smtp_peer.messages for r in m.rcpt_tos) == [
        "calm@example.com",
        "skip@example.com",
    ]
    assert [m.message["Subject"] for m in smtp_peer.messages if "skip@" in m.rcpt_tos[0]] == ["u"]
