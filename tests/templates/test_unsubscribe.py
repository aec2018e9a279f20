"""One-click unsubscribe and the preferences API, on both databases: the link from an email a
real SMTP server received turns that user's email off for that type, without a login, and the
next email of that type is skipped; a forged or altered link is 403 and changes nothing;
``GET``/``PATCH /v1/users/{u}/preferences`` with the key or the user's own token."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from notifier.unsubscribe import sign
from tests.api.helpers import assert_error, new_user
from tests.dispatch.harness import running_stack
from tests.dispatch.smtp import DispatchSmtpPeer
from tests.support.service import RunningService

ONE_CLICK = {"List-Unsubscribe": "One-Click"}  # RFC 8058's body, form-encoded


def secret_of(service: RunningService) -> str:
    secret = service.settings.token_secret
    assert secret is not None
    return secret.get_secret_value()


async def preferences(service: RunningService, user: str) -> dict[str, Any]:
    async with service.client() as client:
        response = await client.get(f"/v1/users/{user}/preferences")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_link_in_a_received_email_unsubscribes_that_type(
    db_url: str, smtp_peer: DispatchSmtpPeer
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with running_stack(db_url, **smtp_peer.settings()) as stack:
        await stack.put_recipient(user, email="ann@example.com")
        first = await stack.notify(
            user_id=user, title="Disk", message="80% full", notification_type="warning",
            channels=["email"],
        )  # fmt: skip
        await stack.wait_channel(first["id"], "email", "delivered")
        [mail] = smtp_peer.messages
        url = mail.message["List-Unsubscribe"][1:-1]
        assert url.startswith(f"{stack.base_url}/v1/unsubscribe/")
        # What a mailbox provider does: a POST with no credential, RFC 8058's body.
        async with httpx.AsyncClient() as anonymous:
            response = await anonymous.post(url, data=ONE_CLICK)
            again = await anonymous.post(url, data=ONE_CLICK)  # idempotent
        assert response.status_code == 200, response.text
        assert response.json() == {
            "unsubscribed": True,
            "user_id": user,
            "notification_type": "warning",
            "channel": "email",
        }
        assert again.status_code == 200
        assert (await preferences(stack.service, user))["types"] == {"warning": {"email": False}}
        # The next warning email is skipped; another type still goes out.
        second = await stack.notify(
            user_id=user, title="Disk", message="90% full", notification_type="warning",
            channels=["email"],
        )  # fmt: skip
        third = await stack.notify(
            user_id=user, title="Backup", message="done", notification_type="success",
            channels=["email"],
        )  # fmt: skip
        skipped = await stack.wait_channel(second["id"], "email", "skipped")
        await stack.wait_channel(third["id"], "email", "delivered")
    assert "opted out of email for warning" in skipped["delivery_status"]["email"]["last_error"]
    assert [m.message["Subject"] for m in smtp_peer.messages] == ["Disk", "Backup"]


def _forgeries(good: str, secret: str) -> list[tuple[str, str]]:
    payload, signature = good.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    other_user = sign(secret, "mallory", "warning").split(".")[0]
    return [
        ("altered signature", f"{payload}.{flipped}"),
        ("another user's payload", f"{other_user}.{signature}"),
        ("signed with another secret", sign("another-secret-0123456789abcdef", "ann", "info")),
        ("no signature", f"{payload}."),
        ("truncated", good[:-3]),
    ]


async def test_a_forged_or_altered_link_is_403_and_changes_nothing(
    service: RunningService,
) -> None:
    user = new_user()
    good = sign(secret_of(service), user, "warning")
    async with httpx.AsyncClient(base_url=service.base_url) as anonymous:
        for why, token in _forgeries(good, secret_of(service)):
            response = await anonymous.post(f"/v1/unsubscribe/{token}", data=ONE_CLICK)
            assert response.status_code in (403, 422), (why, response.text)
            assert_error(response, response.status_code)
            page = await anonymous.get(f"/v1/unsubscribe/{token}")
            assert page.status_code in (403, 422), (why, page.text)
    assert await preferences(service, user) == {"user_id": user, "channels": {}, "types": {}}
    assert await preferences(service, "mallory") == {
        "user_id": "mallory",
        "channels": {},
        "types": {},
    }


async def test_following_the_link_shows_a_page_and_changes_nothing(
    service: RunningService,
) -> None:
    user = new_user()
    token = sign(secret_of(service), user, "error")
    async with httpx.AsyncClient(base_url=service.base_url) as browser:
        page = await browser.get(f"/v1/unsubscribe/{token}")
        assert page.status_code == 200 and '<form method="post">' in page.text
        assert (await preferences(service, user))["types"] == {}
        done = await browser.post(
            f"/v1/unsubscribe/{token}", data=ONE_CLICK, headers={"Accept": "text/html"}
        )
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert (await preferences(service, user))["types"] == {"error": {"email": False}}


async def test_preferences_are_read_and_changed_by_the_user_or_a_producer(
    service: RunningService,
) -> None:
    user, other = new_user(), new_user()
    token = await service.user_token(user)
    mine = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        response = await client.patch(
            f"/v1/users/{user}/preferences",
            json={"channels": {"sms": False}, "types": {"progress": {"email": False}}},
            headers=mine,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "user_id": user,
            "channels": {"sms": False},
            "types": {"progress": {"email": False}},
        }
        # null removes a setting; the rest stays.
        response = await client.patch(
            f"/v1/users/{user}/preferences", json={"channels": {"sms": None}}, headers=mine
        )
        assert response.json()["channels"] == {}
        assert response.json()["types"] == {"progress": {"email": False}}
        # Another user's token reaches nothing (404, as for every other user path).
        theirs = await client.get(f"/v1/users/{other}/preferences", headers=mine)
        assert_error(theirs, 404)
    async with service.client() as producer:
        seen = await producer.get(f"/v1/users/{user}/recipient")
    assert seen.json()["preferences"]["types"] == {"progress": {"email": False}}


@pytest.mark.parametrize(
    "body",
    [
        {"channels": {"pigeon": False}},
        {"channels": {"email": "no"}},
        {"types": {"gossip": {"email": False}}},
        {"types": {"info": {"email": 0}}},
        {"mute": True},
        {"channels": []},
    ],
)
async def test_bad_preferences_are_422_and_change_nothing(
    service: RunningService, body: dict[str, Any]
) -> None:
    user = new_user()
    async with service.client() as client:
        response = await client.patch(f"/v1/users/{user}/preferences", json=body)
    assert_error(response, 422, "validation_error")
    assert await preferences(service, user) == {"user_id": user, "channels": {}, "types": {}}
