"""``GET /v1/admin/stats``: the console's figures, on both databases.

The figures are computed from the transition rows the state machine records. The first tests
seed rows of a known shape (a storage-level check of the buckets and the percentiles, the same
on both databases); the others make real deliveries to a real SMTP peer, one that accepts and
one address it refuses (550), and read the counts the endpoint reports.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.models.transition import NotificationTransition
from notifier.storage.admin_stats import StatsWindow, percentile
from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.peers.smtp import SmtpPeer


def new_user() -> str:
    return f"con-{uuid.uuid4().hex[:10]}"


async def stats(stack: Stack, **params: Any) -> dict[str, Any]:
    response = await stack.api.get("/v1/admin/stats", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def transition(
    kind: str, channel: str, at: datetime, latency_ms: int | None = None
) -> NotificationTransition:
    return NotificationTransition(
        id=uuid.uuid4(),
        notification_id=uuid.uuid4(),
        user_id="seeded",
        kind=kind,
        channel=channel,
        from_status="pending",
        to_status=kind.removeprefix("channel."),
        attempts=1,
        latency_ms=latency_ms,
        occurred_at=at,
    )


async def seed(stack: Stack, rows: list[NotificationTransition]) -> None:
    async with stack.service.context.sessions() as session, session.begin():
        session.add_all(rows)


# --- the window and the percentiles, without a database ---------------------------------------


def test_an_hour_is_sixty_one_minute_steps_ending_with_the_current_one() -> None:
    now = datetime(2026, 12, 5, 10, 30, 15, tzinfo=UTC)
    window = StatsWindow.ending(3600, now)
    assert window.step_seconds == 60
    assert len(window.timestamps) == 60
    assert window.timestamps[-1] == int(datetime(2026, 12, 5, 10, 30, tzinfo=UTC).timestamp())
    assert window.timestamps[0] == int(datetime(2026, 12, 5, 9, 31, tzinfo=UTC).timestamp())
    day = StatsWindow.ending(86_400, now)
    assert (day.step_seconds, len(day.timestamps)) == (1440, 60)


def test_percentile_interpolates_like_percentile_cont() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0.5) == 25.0
    assert percentile(values, 0.95) == pytest.approx(38.5)
    assert percentile(values, 0.99) == pytest.approx(39.7)
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


# --- seeded transitions, both databases -------------------------------------------------------


async def test_steps_counts_and_percentiles_from_seeded_transitions(db_url: str) -> None:
    """A made-up channel name keeps the rows apart from anything else in the database; both
    databases must give the same counts per step and the same interpolated percentiles."""
    channel = f"t{uuid.uuid4().hex[:8]}"
    async with running_stack(db_url, worker=False) as stack:
        now = datetime.now(UTC)
        this_minute = now.replace(second=0, microsecond=0)
        earlier = this_minute - timedelta(minutes=5)
        await seed(
            stack,
            [
                *(
                    transition("channel.delivered", channel, this_minute, latency_ms=ms)
                    for ms in (10, 20, 30, 40)
                ),
                transition("channel.failed", channel, this_minute),
                transition("channel.sent", channel, earlier + timedelta(seconds=30), 500),
                transition("channel.skipped", channel, earlier),
                transition("channel.skipped", channel, earlier),
                # Outside the window, and not a counted kind: neither shows.
                transition("channel.delivered", channel, now - timedelta(hours=2), 1),
                transition("channel.retrying", channel, this_minute),
            ],
        )
        body = await stats(stack)

    assert body["window_seconds"] == 3600 and body["step_seconds"] == 60
    assert len(body["timestamps"]) == 60
    # The window ends at the request's minute, which is the seed's minute or, if the clock
    # crossed a minute in between, the next one; the seeded rows are found by their timestamps.
    seeded = int(this_minute.timestamp())
    assert body["timestamps"][-1] in (seeded, seeded + 60)
    last = body["timestamps"].index(seeded)
    five_ago = last - 5
    series = body["channels"][channel]
    assert series["delivered"][last] == 4 and sum(series["delivered"]) == 4
    assert series["failed"][last] == 1 and sum(series["failed"]) == 1
    assert series["sent"][five_ago] == 1 and sum(series["sent"]) == 1
    assert series["skipped"][five_ago] == 2 and sum(series["skipped"]) == 2
    latency = series["latency_ms"]
    assert latency["p50"][last] == 25.0
    assert latency["p95"][last] == pytest.approx(38.5)
    assert latency["p99"][last] == pytest.approx(39.7)
    assert latency["p50"][five_ago] == 500.0
    assert latency["p50"][0] is None  # no sends that minute
    # Every registered channel has its series, zeros included.
    assert set(body["channels"]) >= {"websocket", "email", "browser", "sms", channel}
    assert body["channels"]["sms"]["sent"] == [0] * 60
    assert body["channels"]["sms"]["queue"] == {"pending": 0, "retrying": 0, "in_flight": 0}


async def test_a_longer_window_has_longer_steps(db_url: str) -> None:
    async with running_stack(db_url, worker=False) as stack:
        body = await stats(stack, window_seconds=86_400)
        short = await stats(stack, window_seconds=60)
    assert body["step_seconds"] == 1440 and len(body["timestamps"]) == 60
    assert short["step_seconds"] == 1 and len(short["timestamps"]) == 60
    assert len(body["channels"]["email"]["delivered"]) == 60


# --- real deliveries, both databases ----------------------------------------------------------


async def test_counts_match_what_real_deliveries_did(db_url: str, smtp_peer: SmtpPeer) -> None:
    """Three emails accepted (250), two refused for good (550), one with no address (skipped):
    the endpoint counts exactly those, and times the three that went out."""
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        good, refused, nowhere = new_user(), new_user(), new_user()
        await stack.put_recipient(good, email="ops@example.com")
        await stack.put_recipient(refused, email="nouser@example.com")
        created = [
            *[
                await stack.notify(user_id=good, title=f"ok {i}", message="m", channels=["email"])
                for i in range(3)
            ],
            *[
                await stack.notify(
                    user_id=refused, title=f"no {i}", message="m", channels=["email"]
                )
                for i in range(2)
            ],
            await stack.notify(user_id=nowhere, title="none", message="m", channels=["email"]),
        ]
        final = [await stack.wait_settled(n["id"]) for n in created]
        body = await stats(stack)

    assert [n["delivery_status"]["email"]["status"] for n in final] == [
        "delivered",
        "delivered",
        "delivered",
        "failed",
        "failed",
        "skipped",
    ]
    email = body["channels"]["email"]
    assert sum(email["delivered"]) == 3
    assert sum(email["failed"]) == 2
    assert sum(email["skipped"]) == 1
    assert sum(email["sent"]) == 0  # SMTP's 250 is delivered at once
    timed = [v for v in email["latency_ms"]["p50"] if v is not None]
    assert timed and all(0 <= v < 10_000 for v in timed)
    assert email["queue"] == {"pending": 0, "retrying": 0, "in_flight": 0}
    assert len(smtp_peer.messages) == 3


async def test_queue_shows_pending_and_retrying_channels(db_url: str, smtp_peer: SmtpPeer) -> None:
    """Without a worker, enqueued email waits as pending; a peer answering 451 leaves the
    channel retrying (the next attempt an hour away) once a worker has tried."""
    async with running_stack(
        db_url,
        worker=False,
        retry_base_seconds=3600,
        retry_max_seconds=3600,
        **smtp_peer.settings(),
    ) as stack:
        user, busy = new_user(), new_user()
        await stack.put_recipient(user, email="ops@example.com")
        await stack.put_recipient(busy, email="busy@example.com")
        scheduled = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        for _ in range(2):
            await stack.notify(
                user_id=user, title="later", message="m", channels=["email"], send_at=scheduled
            )
        waiting = await stats(stack)
        retried = await stack.notify(user_id=busy, title="busy", message="m", channels=["email"])
        await stack.start_worker()
        await stack.wait_channel(retried["id"], "email", "retrying")
        after = await stats(stack)

    assert waiting["channels"]["email"]["queue"] == {"pending": 2, "retrying": 0, "in_flight": 0}
    assert after["channels"]["email"]["queue"] == {"pending": 2, "retrying": 1, "in_flight": 0}


# --- refusals ---------------------------------------------------------------------------------


async def test_refusals(db_url: str) -> None:
    async with running_stack(db_url, worker=False) as stack:
        anonymous = await stack.api.get("/v1/admin/stats", headers={"Authorization": ""})
        wrong = await stack.api.get(
            "/v1/admin/stats", headers={"Authorization": "Bearer not-a-key"}
        )
        token = await stack.service.user_token("someone")
        as_user = await stack.api.get(
            "/v1/admin/stats", headers={"Authorization": f"Bearer {token}"}
        )
        bad = [
            await stack.api.get("/v1/admin/stats", params={"window_seconds": value})
            for value in ("59", "86401", "0", "-5", "abc", "3600.5", "")
        ]
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert wrong.status_code == 401
    assert as_user.status_code == 403
    for response in bad:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "validation_error"


async def test_queue_shows_a_send_in_flight(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    """While the SMTP peer holds the message without answering, the worker holds the lease:
    the channel is in flight, not pending."""
    smtp_peer.accept_budget = 0  # every DATA is taken in, then never answered
    async with running_stack(db_url, smtp_timeout_seconds=2.0, **smtp_peer.settings()) as stack:
        user = new_user()
        await stack.put_recipient(user, email="ops@example.com")
        await stack.notify(user_id=user, title="slow", message="m", channels=["email"])
        await smtp_peer.wait_for_messages(1)  # the worker is inside its send now
        during = await stats(stack)
    assert during["channels"]["email"]["queue"] == {"pending": 0, "retrying": 0, "in_flight": 1}
