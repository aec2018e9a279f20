"""Digest end to end (docs/architecture.md, "Digest, throttle and escalation"): members'
email is held and goes out as ONE digest email to the real SMTP peer when the window closes;
their email channels become ``digested`` (``provider_id`` ``digest:<id>``); with ``leading`` the
first goes out at once; two workers racing over one window still make one digest."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dispatch.harness import Stack, running_stack
from tests.dispatch.smtp import DispatchSmtpPeer


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def items(user: str, n: int, **digest: Any) -> list[dict[str, Any]]:
    return [
        {
            "user_id": user,
            "title": f"task {i} failed",
            "message": f"exit code {i}",
            "channels": ["websocket", "email"],
            "digest": {"key": "failures", "window_seconds": 1, **digest},
        }
        for i in range(n)
    ]


async def digests_of(stack: Stack, user: str) -> list[Any]:
    return await stack.sql(
        "SELECT id, title, message, channels FROM notifications "
        "WHERE user_id = :user AND dedupe_key LIKE 'digest:%'",
        user=user,
    )


async def test_members_go_out_as_one_digest(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email=f"{user}@example.com")
        created = await stack.notify_batch(items(user, 5))
        members = [await stack.wait_settled(n["id"]) for n in created]
        [digest_row] = await digests_of(stack, user)
        digest = await stack.wait_settled(str(uuid.UUID(str(digest_row.id))))
        [message_id] = await smtp_peer.wait_for_accepted(1)
        inbox = (await stack.api.get(f"/v1/users/{user}/notifications")).json()

    assert message_id == f"<{digest['id']}@notifier.test>"
    # The built-in ``digest`` template, in the recipient's (default) locale.
    assert digest["title"] == "5 new notifications"
    assert digest["metadata"]["template"] == {"key": "digest", "version": 0, "locale": "en"}
    [mail] = smtp_peer.messages
    assert mail.message["Subject"] == "5 new notifications"
    assert "• task 0 failed: exit code 0" in mail.text
    assert "<strong>task 4 failed</strong>" in mail.html
    assert digest["metadata"]["digest"] == {
        "key": "failures",
        "count": 5,
        "members": [n["id"] for n in created],
    }
    assert [e["title"] for e in digest["metadata"]["data"]["events"]] == [
        f"task {i} failed" for i in range(5)
    ]
    assert digest["delivery_status"]["email"]["status"] == "delivered"
    for member in members:
        email = member["delivery_status"]["email"]
        assert email["status"] == "digested"
        assert email["provider_id"] == f"digest:{digest['id']}"
        assert member["delivery_status"]["websocket"]["status"] == "sent"  # never held
        assert member["status"] == "delivered"
    # The inbox lists the members, not the digest; the digest is not unread.
    assert {i["id"] for i in inbox["items"]} == {n["id"] for n in created}
    assert inbox["unread_count"] == 5
    assert smtp_peer.rcpts == [f"{user}@example.com"]


async def test_leading_sends_the_first_at_once(db_url: str, smtp_peer: DispatchSmtpPeer) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email=f"{user}@example.com")
        # A window long enough that the rest are made within it on a slow machine too.
        [first] = await stack.notify_batch(items(user, 1, leading=True, window_seconds=3))
        first_body = await stack.wait_settled(first["id"])
        rest = await stack.notify_batch(items(user, 3, leading=True, window_seconds=3))
        members = [await stack.wait_settled(n["id"]) for n in rest]
        accepted = await smtp_peer.wait_for_accepted(2)
        [digest_row] = await digests_of(stack, user)

    digest_id = str(uuid.UUID(str(digest_row.id)))
    assert first_body["delivery_status"]["email"]["status"] == "delivered"
    assert accepted == [f"<{first['id']}@notifier.test>", f"<{digest_id}@notifier.test>"]
    assert {m["delivery_status"]["email"]["status"] for m in members} == {"digested"}
    assert digest_row.title == "3 new notifications"


@pytest.mark.postgres
async def test_two_workers_account_for_every_member_once(
    fresh_pg_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    """Two workers racing over a storm of 200 made within one window: ONE digest of all 200,
    one email, every member digested exactly once, however long the backlog takes to claim
    (the close takes in the members no worker has reached yet)."""
    user = new_user()
    async with running_stack(fresh_pg_url, **smtp_peer.settings(), worker=False) as stack:
        await stack.put_recipient(user, email=f"{user}@example.com")
        created = await stack.notify_batch(items(user, 200, window_seconds=2))
        await stack.start_worker()
        await stack.start_worker()
        members = [await stack.wait_settled(n["id"], within=30) for n in created]
        rows = await digests_of(stack, user)
        digests = [await stack.wait_settled(str(uuid.UUID(str(r.id)))) for r in rows]
        accepted = await smtp_peer.wait_for_accepted(len(digests))

    assert len(digests) == 1
    listed = [m for d in digests for m in d["metadata"]["digest"]["members"]]
    assert sorted(listed) == sorted(n["id"] for n in created)  # each member once, none lost
    assert sum(d["metadata"]["digest"]["count"] for d in digests) == 200
    assert {m["delivery_status"]["email"]["status"] for m in members} == {"digested"}
    for member in members:
        [owner] = [d for d in digests if member["id"] in d["metadata"]["digest"]["members"]]
        assert member["delivery_status"]["email"]["provider_id"] == f"digest:{owner['id']}"
    assert sorted(accepted) == sorted(f"<{d['id']}@notifier.test>" for d in digests)
    assert len(smtp_peer.received_ids()) == len(digests)


async def test_a_failure_storm_is_the_first_failure_and_one_digest(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    """Failed tasks, digested per user by default (here a 2 s window): the first failure's
    email at once, the rest as one digest email."""
    user = new_user()
    async with running_stack(
        db_url, **smtp_peer.settings(), digest_task_failures_seconds=2
    ) as stack:
        await stack.put_recipient(user, email=f"{user}@example.com")
        failed = []
        for i in range(4):
            task_id = f"t-{uuid.uuid4().hex[:8]}"
            body = {"task_id": task_id, "user_id": user, "task_type": f"export{i}"}
            assert (await stack.api.post("/v1/tasks", json=body)).status_code == 201
            patched = await stack.api.patch(f"/v1/tasks/{task_id}", json={"status": "failed"})
            assert patched.status_code == 200, patched.text
            failed.append(task_id)
        accepted = await smtp_peer.wait_for_accepted(2)
        [digest_row] = await digests_of(stack, user)
        digest = await stack.get(str(uuid.UUID(str(digest_row.id))))

    assert len(accepted) == 2
    assert digest["metadata"]["digest"]["key"] == "task-failures"
    assert digest["metadata"]["digest"]["count"] == 3
    assert accepted[1] == f"<{digest['id']}@notifier.test>"


DIGEST_TEMPLATE = {
    "default_locale": "en",
    "locales": {
        "en": {
            "title": "{{ data.count }} jobs failed",
            "message": "{% for e in data.events %}{{ e.title }};{% endfor %}",
            "email_subject": "[ops] {{ data.count }} failures",
        },
        "de": {
            "title": "{{ data.count }} Jobs fehlgeschlagen",
            "message": "{% for e in data.events %}{{ e.title }};{% endfor %}",
            "email_subject": "[ops] {{ data.count }} Fehler",
        },
    },
}


async def test_the_digest_is_worded_by_its_own_template(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    """A ``digest.<key>`` template registered through the API words the digest, in the
    recipient's locale; the email carries its rendered subject and body."""
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        put = await stack.api.put("/v1/templates/digest.failures", json=DIGEST_TEMPLATE)
        assert put.status_code in (200, 201), put.text
        await stack.put_recipient(user, email=f"{user}@example.com", locale="de-AT")
        created = await stack.notify_batch(items(user, 3))
        for n in created:
            await stack.wait_settled(n["id"])
        [digest_row] = await digests_of(stack, user)
        digest = await stack.wait_settled(str(uuid.UUID(str(digest_row.id))))
        await smtp_peer.wait_for_accepted(1)

    [mail] = smtp_peer.messages
    assert mail.message["Subject"] == "[ops] 3 Fehler"
    assert mail.text.startswith(
        "3 Jobs fehlgeschlagen\n\ntask 0 failed;task 1 failed;task 2 failed;"
    )
    assert digest["title"] == "3 Jobs fehlgeschlagen"
    assert digest["metadata"]["template"] == {
        "key": "digest.failures",
        "version": 1,
        "locale": "de",
    }


async def test_the_built_in_digest_speaks_the_recipients_language(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = new_user()
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email=f"{user}@example.com", locale="zh-CN")
        created = await stack.notify_batch(items(user, 2))
        for n in created:
            await stack.wait_settled(n["id"])
        await smtp_peer.wait_for_accepted(1)

    [mail] = smtp_peer.messages
    assert mail.message["Subject"] == "您有 2 条新通知"
    assert "• task 1 failed：exit code 1" in mail.text  # noqa: RUF001 (the zh-CN colon)
