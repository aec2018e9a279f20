"""An exception that is not a ``DeliveryError`` still ends as a recorded outcome, never as a
row claimed again and again without a word (docs/architecture.md, "Rules"):

- raised by a channel's send: an unknown outcome, recorded as an attempt naming the exception,
  tried at most once more, then ``failed``;
- raised before the send (here: the recipient rules meet a stored time zone that does not
  exist): that channel ``failed`` at once, naming the exception, nothing sent; the notification's
  other channels go out as usual;
- raised by the database at the record: a push service's ``Location`` longer than the
  ``provider_id`` column made PostgreSQL refuse the success, and the push went out again every
  lease. It is cut to the column.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import tests.support.worker
from notifier.channels.base import DeliveryChannel, Destination, OutgoingMessage, SendResult
from notifier.models.notification import Channel, ChannelStatus, NotificationDelivery
from notifier.realtime.fanout import Fanout
from notifier.settings import Settings
from notifier.storage.dispatch import PROVIDER_ID_CHARS
from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.peers import PushPeer, PushReply
from workers.runner import build_channels


class RaisingChannel:
    """An email channel whose every send raises ``ValueError``, standing for a library that
    raises what it should not: a stand-in, since no real peer makes our channels raise that."""

    name: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, *, sends_in_place: bool = False) -> None:
        self.sends = 0
        # True: the worker's batch makes the first try in its own task (``workers/batch.py``).
        self.sends_in_place = sends_in_place

    @property
    def configured(self) -> bool:
        return True

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        self.sends += 1
        raise ValueError("no JSON object could be decoded")

    async def aclose(self) -> None:
        return None


class InPlaceEmail:
    """An email channel that takes every message without awaiting anything, and says so: the
    worker decides and sends it in its batch's own task, as it does the websocket channel."""

    name: ClassVar[Channel] = Channel.EMAIL
    sends_in_place: ClassVar[bool] = True

    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []

    @property
    def configured(self) -> bool:
        return True

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        self.messages.append(message)
        return SendResult(ChannelStatus.SENT)

    async def aclose(self) -> None:
        return None


def with_email(monkeypatch: pytest.MonkeyPatch, channel: DeliveryChannel) -> None:
    """The test stack's dispatchers get ``channel`` for email, the real ones else."""

    def channels(
        settings: Settings, sessions: async_sessionmaker[AsyncSession], fanout: Fanout
    ) -> dict[str, DeliveryChannel]:
        return {**build_channels(settings, sessions, fanout), "email": channel}

    monkeypatch.setattr(tests.support.worker, "build_channels", channels)


@pytest.fixture(params=[False, True], ids=["awaiting", "in-place"])
def raising_email(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RaisingChannel]:
    """The test stack's dispatchers get the raising channel for email, the real ones else."""
    channel = RaisingChannel(sends_in_place=request.param)
    with_email(monkeypatch, channel)
    yield channel


async def test_a_channel_raising_valueerror_fails_after_two_attempts(
    db_url: str, raising_email: RaisingChannel
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    # The retry base is 0.05 s: the one retry comes well within the wait; the lease (30 s by
    # default) is far beyond it, so a row left unrecorded would not be back in time.
    async with running_stack(db_url) as stack:
        await stack.put_recipient(user, email="raise@example.com")
        created = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
        body = await stack.wait_settled(created["id"])
        [(next_attempt_at, lease_owner)] = await stack.sql(
            "SELECT next_attempt_at, lease_owner FROM notifications WHERE user_id = :u", u=user
        )

    email = body["delivery_status"]["email"]
    assert (email["status"], email["attempts"]) == ("failed", 2), body
    assert "ValueError" in email["last_error"], body
    assert body["status"] == "failed"
    assert raising_email.sends == 2
    assert (next_attempt_at, lease_owner) == (None, None)  # settled: nobody claims it again


@pytest.mark.parametrize("in_place", [False, True], ids=["awaiting", "in-place"])
async def test_an_exception_before_the_send_fails_that_channel_only(
    db_url: str, smtp_peer: DispatchSmtpPeer, monkeypatch: pytest.MonkeyPatch, in_place: bool
) -> None:
    """``in_place``: both channels are decided and sent in the batch's own task
    (``workers/batch.py``), email by a stand-in that says its send awaits nothing."""
    in_place_email = InPlaceEmail()
    if in_place:
        with_email(monkeypatch, in_place_email)
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with running_stack(db_url, worker=False, **smtp_peer.settings()) as stack:
        await stack.put_recipient(
            user,
            email="tz@example.com",
            timezone="UTC",
            quiet_hours={"start": "00:00", "end": "23:59"},
        )
        # Stored by an older release, or by hand: the API would refuse this time zone.
        async with stack.service.context.engine.begin() as connection:
            await connection.execute(
                text("UPDATE recipients SET timezone = 'Nowhere/Atlantis' WHERE user_id = :u"),
                {"u": user},
            )
        created = await stack.notify(
            user_id=user, title="t", message="m", channels=["email", "websocket"]
        )
        await stack.start_worker()
        body = await stack.wait_settled(created["id"])
        [(lease_owner,)] = await stack.sql(
            "SELECT lease_owner FROM notifications WHERE user_id = :u", u=user
        )

    email = body["delivery_status"]["email"]
    assert (email["status"], email["attempts"]) == ("failed", 0), body
    assert "ZoneInfoNotFoundError" in email["last_error"], body
    assert body["delivery_status"]["websocket"]["status"] == "sent"
    assert body["status"] == "partially_failed"
    assert smtp_peer.messages == [] and in_place_email.messages == []
    assert lease_owner is None  # released with (or after) its last outcome


async def test_a_long_push_location_is_recorded_and_not_pushed_again(
    db_url: str, push_peer: PushPeer, push_settings: dict[str, object]
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    subscription = push_peer.subscribe()
    location = f"{push_peer.origin}/message/{'m' * 400}"
    push_peer.reply(subscription.id, PushReply(201, location=location))
    async with running_stack(db_url, **push_settings) as stack:
        response = await stack.api.post(
            f"/v1/users/{user}/push-subscriptions", json=subscription.as_json()
        )
        assert response.status_code == 201
        created = await stack.notify(user_id=user, title="t", message="m", channels=["browser"])
        body = await stack.wait_settled(created["id"])

    browser = body["delivery_status"]["browser"]
    assert (browser["status"], browser["attempts"]) == ("sent", 1), body
    assert browser["provider_id"] == location[:PROVIDER_ID_CHARS]
    assert NotificationDelivery.__table__.c.provider_id.type.length == PROVIDER_ID_CHARS
    assert [push.status for push in push_peer.pushes] == [201]
