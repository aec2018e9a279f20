"""Adding a channel is its module and one registration line (docs/architecture.md,
"Channels"). A "pager" that exists only in this file — its ``DeliveryChannel`` and its
``ChannelSpec`` — is registered from here, and then the API accepts it (and documents it),
refuses what does not fit its payload limit, the worker's quiet hours hold it back as its spec
says, and a real dispatcher delivers it to the phone number the recipient rules resolve; on
both databases. Nothing else in the service is changed for it.

The pager is a stand-in: it records what it was sent instead of paging anyone (there is no
paging peer to run)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from notifier.channels.base import Destination, NotDeliverable, OutgoingMessage, SendResult
from notifier.channels.registry import CHANNELS
from notifier.channels.spec import Address, ChannelSpec, PayloadLimit
from notifier.models.notification import ChannelStatus
from tests.dispatch.harness import running_stack
from tests.dispatch.test_recipient_rules import window_around_now

PAGER_TITLE_CHARS = 40


@dataclass
class Pages:
    """What every pager built during a test was sent: (phone, title, message)."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)


class PagerChannel:
    name: ClassVar[str] = "pager"

    def __init__(self, pages: Pages) -> None:
        self._pages = pages

    @property
    def configured(self) -> bool:
        return True

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        if not destination.phone:
            raise NotDeliverable("no phone number")
        self._pages.sent.append((destination.phone, message.title, message.message))
        return SendResult(ChannelStatus.DELIVERED, provider_id=f"page-{len(self._pages.sent)}")

    async def aclose(self) -> None:
        return None


def pager_spec(pages: Pages) -> ChannelSpec:
    return ChannelSpec(
        name="pager",
        address=Address.PHONE,
        quiet_hours=True,
        configured=lambda settings: True,
        build=lambda parts: PagerChannel(pages),
        payload_limit=PayloadLimit(
            fits=lambda draft: len(draft.title) <= PAGER_TITLE_CHARS,
            message=f"a page shows {PAGER_TITLE_CHARS} characters of title; shorten it",
            reason="too long for a pager",
            code="page_too_long",
        ),
    )


@pytest.fixture
def pages() -> Iterator[Pages]:
    pages = Pages()
    with CHANNELS.registered(pager_spec(pages)):  # the one registration line
        yield pages


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


async def test_a_registered_channel_is_enqueued_and_delivered(db_url: str, pages: Pages) -> None:
    user = new_user()
    async with running_stack(db_url) as stack:
        await stack.put_recipient(user, phone="+15005550006")
        created = await stack.notify(
            user_id=user, title="Disk full", message="db-1 at 97%", channels=["pager", "websocket"]
        )
        assert set(created["delivery_status"]) == {"pager", "websocket"}
        body = await stack.wait_channel(created["id"], "pager", "delivered")
        schema = (await stack.api.get("/openapi.json")).json()

    assert body["delivery_status"]["pager"]["provider_id"] == "page-1"
    assert pages.sent == [("+15005550006", "Disk full", "db-1 at 97%")]
    channels = schema["components"]["schemas"]["NotificationCreate"]["properties"]["channels"]
    assert "pager" in channels["items"]["enum"]
    assert channels["maxItems"] == len(CHANNELS)


async def test_a_registered_channel_follows_its_spec(db_url: str, pages: Pages) -> None:
    """Its payload limit refuses at enqueue; its address comes from the recipient rules (none:
    skipped); its quiet hours hold it back."""
    quiet, stranger = new_user(), new_user()
    async with running_stack(db_url) as stack:
        too_long = await stack.api.post(
            "/v1/notifications",
            json={"user_id": quiet, "title": "x" * 41, "message": "m", "channels": ["pager"]},
        )
        await stack.put_recipient(
            quiet, phone="+15005550006", timezone="UTC", quiet_hours=window_around_now("UTC")
        )
        held = await stack.notify(user_id=quiet, title="t", message="m", channels=["pager"])
        nowhere = await stack.notify(user_id=stranger, title="t", message="m", channels=["pager"])
        held_body = await stack.wait_settled(held["id"])
        nowhere_body = await stack.wait_settled(nowhere["id"])

    assert too_long.status_code == 422, too_long.text
    error = too_long.json()["error"]
    assert error["message"] == f"a page shows {PAGER_TITLE_CHARS} characters of title; shorten it"
    assert error["details"][0]["type"] == "page_too_long"
    assert held_body["delivery_status"]["pager"]["status"] == "skipped"
    assert held_body["delivery_status"]["pager"]["last_error"] == "quiet hours"
    assert nowhere_body["delivery_status"]["pager"]["status"] == "skipped"
    assert nowhere_body["delivery_status"]["pager"]["last_error"] == "no phone number"
    assert pages.sent == []


async def test_an_unregistered_channel_is_refused(db_url: str) -> None:
    async with running_stack(db_url, worker=False) as stack:
        response = await stack.api.post(
            "/v1/notifications",
            json={"user_id": new_user(), "title": "t", "message": "m", "channels": ["pager"]},
        )
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["loc"][-2:] == ["channels", 0]
    assert detail["msg"] == "Input should be 'websocket', 'email', 'browser' or 'sms'"


def test_the_registry_lists_each_built_in_channel_once() -> None:
    assert CHANNELS.names == ("websocket", "email", "browser", "sms")
    quiet = {spec.name for spec in CHANNELS if spec.quiet_hours}
    assert quiet == {"email", "browser", "sms"}  # never the in-app websocket
    with pytest.raises(ValueError, match="registered already"):
        CHANNELS.register(CHANNELS["email"])
