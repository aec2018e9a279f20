"""Our SMTP credentials refused (535): the email channel pauses (circuit breaker) with an alert,
and no recipient is marked failed for it."""

from __future__ import annotations

import logging

import pytest

from tests.api.helpers import new_user
from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer


async def test_auth_failure_pauses_the_channel_without_failing_recipients(
    db_url: str, smtp_peer: DispatchSmtpPeer, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_peer.credentials = ("notifier", "right-password")
    caplog.set_level(logging.ERROR, logger="notifier.worker")
    async with running_stack(
        db_url, **smtp_peer.settings(smtp_username="notifier", smtp_password="wrong")
    ) as stack:
        first_user = new_user()
        await stack.put_recipient(first_user, email=f"{first_user}@example.com")
        first = await stack.notify(user_id=first_user, title="t", message="m", channels=["email"])
        tripped = await stack.wait_channel(first["id"], "email", "retrying", within=15)
        logins_when_tripped = smtp_peer.failed_logins

        # While paused, queued recipients are not tried against the broken configuration.
        later = []
        for _ in range(2):
            user = new_user()
            await stack.put_recipient(user, email=f"{user}@example.com")
            created = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
            later.append(await stack.wait_channel(created["id"], "email", "retrying", within=15))

    assert logins_when_tripped >= 1 and smtp_peer.failed_logins == logins_when_tripped
    assert smtp_peer.messages == []
    email = tripped["delivery_status"]["email"]
    assert email["status"] == "retrying" and "535" in email["last_error"]
    for body in later:
        held = body["delivery_status"]["email"]
        assert held["status"] == "retrying"  # not failed: the recipient is not at fault
        assert held["attempts"] == 0 and "paused" in held["last_error"]
        assert held["next_attempt_at"] is not None
    alerts = [r for r in caplog.records if "ALERT channel email paused" in r.getMessage()]
    assert len(alerts) == 1
