"""When things go out: priority under a backlog, ``send_at``, ``expires_at``, and the retry and
cancel endpoints, observed at the SMTP peer and through the API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


async def test_urgent_overtakes_a_backlog_of_low(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, worker=False, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="backlog@example.com")
        low = await stack.notify_batch(
            [
                {
                    "user_id": user,
                    "title": f"low {i}",
                    "message": "m",
                    "priority": "low",
                    "channels": ["email"],
                }
                for i in range(50)
            ]
        )
        urgent = await stack.notify_batch(
            [
                {
                    "user_id": user,
                    "title": f"urgent {i}",
                    "message": "m",
                    "priority": "urgent",
                    "channels": ["email"],
                }
                for i in range(5)
            ]
        )
        async with stack.worker(worker_concurrency=1, worker_batch_size=1):
            await smtp_peer.wait_for_messages(55, timeout=30)
            last = await stack.wait_settled(low[-1]["id"])

    subjects = [str(m.message["Subject"]) for m in smtp_peer.messages]
    assert sorted(subjects[:5]) == sorted(f"urgent {i}" for i in range(5))
    assert all(s.startswith("low ") for s in subjects[5:])
    assert len(set(subjects)) == 55
    assert last["status"] == "delivered"
    assert {item["priority"] for item in urgent} == {"urgent"}


async def test_send_at_is_kept(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="later@example.com")
        send_at = datetime.now(UTC) + timedelta(seconds=2)
        created = await stack.notify(
            user_id=user,
            title="t",
            message="m",
            channels=["email"],
            send_at=send_at.isoformat(),
        )
        early = await stack.get(created["id"])
        [mail] = await smtp_peer.wait_for_messages(1, timeout=10)
        body = await stack.wait_settled(created["id"])

    [(message_id, arrived)] = smtp_peer.arrivals
    assert message_id == f"<{created['id']}@notifier.test>"
    assert send_at.timestamp() <= arrived <= send_at.timestamp() + 1.5
    assert early["status"] == "pending"
    assert early["delivery_status"]["email"]["status"] == "pending"
    assert body["status"] == "delivered"
    assert mail.rcpt_tos == ["later@example.com"]


async def test_an_idle_worker_wakes_when_a_scheduled_notification_comes_due(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    # Polling once a minute: only the worker's own wait for the next due time can send this on
    # time (the enqueue's wake-up comes before it is due, and nothing else happens meanwhile).
    user = new_user()
    async with running_stack(db_url, poll_interval_seconds=60, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="due@example.com")
        send_at = datetime.now(UTC) + timedelta(seconds=1.5)
        created = await stack.notify(
            user_id=user, title="t", message="m", channels=["email"], send_at=send_at.isoformat()
        )
        await smtp_peer.wait_for_messages(1, timeout=15)
        body = await stack.wait_settled(created["id"])

    [(_, arrived)] = smtp_peer.arrivals
    assert send_at.timestamp() <= arrived <= send_at.timestamp() + 1.5
    assert body["status"] == "delivered"


async def test_expired_before_dispatch(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    # Enough attempts that the busy mailbox below outlives its notification.
    # The websocket fast path off: this is the worker's expiry of channels it never sent.
    async with running_stack(
        db_url, max_attempts=100, websocket_grace_seconds=0, **smtp_peer.settings()
    ) as stack:
        await stack.put_recipient(user, email="stale@example.com")
        created = await stack.notify(
            user_id=user,
            title="stale",
            message="m",
            channels=["email", "websocket"],
            expires_at=(datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        )
        body = await stack.wait_settled(created["id"])
        # A channel still retrying when the notification expires stops there.
        busy_user = new_user()
        await stack.put_recipient(busy_user, email="busy@example.com")
        retrying = await stack.notify(
            user_id=busy_user,
            title="busy",
            message="m",
            channels=["email"],
            expires_at=(datetime.now(UTC) + timedelta(seconds=1.5)).isoformat(),
        )
        retrying_body = await stack.wait_settled(retrying["id"], within=10)
        # The last message: when it is in, nothing before it is still on the way.
        marker = await stack.notify(user_id=user, title="marker", message="m", channels=["email"])
        await stack.wait_settled(marker["id"])

    for channel in ("email", "websocket"):
        assert body["delivery_status"][channel]["status"] == "expired"
        assert body["delivery_status"][channel]["attempts"] == 0
    assert body["status"] == "expired"
    assert retrying_body["delivery_status"]["email"]["status"] == "expired"
    assert retrying_body["delivery_status"]["email"]["attempts"] >= 1
    assert retrying_body["status"] == "expired"
    assert [m.message["Subject"] for m in smtp_peer.messages] == ["marker"]


async def test_cancel_before_dispatch(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    # The websocket fast path off: it would leave no unsent websocket channel to cancel.
    async with running_stack(
        db_url, worker=False, websocket_grace_seconds=0, **smtp_peer.settings()
    ) as stack:
        await stack.put_recipient(user, email="cancel@example.com")
        created = await stack.notify(
            user_id=user, title="cancelled", message="m", channels=["email", "websocket"]
        )
        response = await stack.api.post(f"/v1/notifications/{created['id']}/cancel")
        assert response.status_code == 200, response.text
        cancelled = response.json()
        again = await stack.api.post(f"/v1/notifications/{created['id']}/cancel")
        async with stack.worker():
            marker = await stack.notify(
                user_id=user, title="marker", message="m", channels=["email"]
            )
            await stack.wait_settled(marker["id"])
            body = await stack.get(created["id"])

    assert cancelled["status"] == "cancelled"
    assert {d["status"] for d in cancelled["delivery_status"].values()} == {"cancelled"}
    assert again.status_code == 409
    assert body["status"] == "cancelled"
    assert body["delivery_status"]["email"]["status"] == "cancelled"
    assert body["delivery_status"]["email"]["attempts"] == 0
    assert [m.message["Subject"] for m in smtp_peer.messages] == ["marker"]


async def test_retry_a_failed_channel(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="nouser@example.com")
        created = await stack.notify(
            user_id=user, title="again", message="m", channels=["email", "websocket"]
        )
        failed = await stack.wait_settled(created["id"])
        assert failed["status"] == "partially_failed"
        assert failed["delivery_status"]["email"]["status"] == "failed"

        smtp_peer.rules.pop("nouser@")  # the mailbox exists now
        response = await stack.api.post(f"/v1/notifications/{created['id']}/retry")
        assert response.status_code == 200, response.text
        requeued = response.json()
        body = await stack.wait_settled(created["id"])
        nothing_left = await stack.api.post(f"/v1/notifications/{created['id']}/retry")

    assert requeued["delivery_status"]["email"]["status"] == "pending"
    assert requeued["delivery_status"]["websocket"]["status"] == "sent"
    assert body["status"] == "delivered"
    email = body["delivery_status"]["email"]
    assert email["status"] == "delivered"
    assert email["attempts"] == 2
    assert email["last_error"] is None
    assert body["delivery_status"]["websocket"]["attempts"] == 1  # not sent again
    assert body["retry_count"] == 1
    assert nothing_left.status_code == 409
    assert smtp_peer.rcpts == ["nouser@example.com", "nouser@example.com"]
    [mail] = smtp_peer.messages
    assert mail.message["Message-ID"] == f"<{created['id']}@notifier.test>"
