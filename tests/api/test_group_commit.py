"""``GroupCommit``: concurrent enqueues share one statement, each caller learns its own fate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.exc import IntegrityError

from notifier.schemas.notification import NotificationCreate
from notifier.storage.enqueue import PreparedEnqueue, prepare
from notifier.storage.enqueue_group import GroupCommit
from tests.api.helpers import new_user, notification_body, notifications_of
from tests.support.service import RunningService


def _one(user: str, title: str = "Hello") -> PreparedEnqueue:
    return prepare([NotificationCreate.model_validate(notification_body(user, title=title))])


@pytest.fixture
async def group(service: RunningService) -> AsyncIterator[GroupCommit]:
    writer = GroupCommit(service.context.engine)
    try:
        yield writer
    finally:
        await writer.aclose()  # its held connections (PostgreSQL)


async def test_concurrent_enqueues_share_one_commit(
    service: RunningService, group: GroupCommit
) -> None:
    user = new_user()
    # gather starts all five before the writer task first runs: they form one group.
    await asyncio.gather(*(group.insert(_one(user, f"n{i}")) for i in range(5)))
    assert group.groups_written == 1
    assert await notifications_of(service, user) == 5


async def test_a_bad_member_fails_alone(service: RunningService, group: GroupCommit) -> None:
    user = new_user()
    taken = _one(user, "first")
    await group.insert(taken)
    duplicate = _one(user, "duplicate")
    # Same primary key as a stored row: this member's insert can only fail.
    duplicate.notifications[0] = taken.notifications[0]
    duplicate.deliveries[:] = taken.deliveries
    results = await asyncio.gather(
        group.insert(_one(user, "a")),
        group.insert(duplicate),
        group.insert(_one(user, "b")),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None, results
    assert isinstance(results[1], IntegrityError)
    assert await notifications_of(service, user) == 3


async def test_many_concurrent_requests_all_answered_and_stored(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/notifications", json=notification_body(user, title=f"n{i}"))
                for i in range(30)
            )
        )
        assert [r.status_code for r in responses] == [202] * 30, [r.text for r in responses]
        for response in responses[:3]:
            read = await client.get(f"/v1/notifications/{response.json()['id']}")
            assert read.status_code == 200, read.text
    assert len({r.json()["id"] for r in responses}) == 30
    assert await notifications_of(service, user) == 30
