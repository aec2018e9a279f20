"""What the unread counter's tests (test_unread_counter*.py) share: the count as the API shows
it, the counter against a COUNT(*) of the rows it counts, notification rows for straight SQL,
and the migrations up or down to a revision."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from alembic import command
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.models import Notification, UserUnreadCount
from notifier.models.unread import user_unread_deltas
from notifier.storage.migrate import alembic_config
from tests.api.helpers import notification_body
from tests.support.service import RunningService

COUNTED = (Notification.is_read.is_(False), Notification.status != "cancelled")


async def unread(client: httpx.AsyncClient, user: str) -> int:
    response = await client.get(f"/v1/users/{user}/notifications")
    assert response.status_code == 200, response.text
    return int(response.json()["unread_count"])


async def enqueue(client: httpx.AsyncClient, user: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/notifications", json=notification_body(user, **fields))
    assert response.status_code == 202, response.text
    return dict(response.json())


async def scalar(connection: AsyncConnection, query: Any) -> int:
    return int((await connection.execute(query)).scalar_one())


async def drift(connection: AsyncConnection, users: list[str] | None = None) -> dict[str, Any]:
    """Users whose counter differs from a COUNT(*) of their counted rows (all users if None),
    as {user: (counter, count)}; and the deltas table, which must be empty between
    statements, under "deltas"."""
    counted = select(Notification.user_id, func.count().label("n")).where(*COUNTED)
    counters = select(UserUnreadCount.user_id, UserUnreadCount.unread)
    if users is not None:
        counted = counted.where(Notification.user_id.in_(users))
        counters = counters.where(UserUnreadCount.user_id.in_(users))
    counts = {
        u: int(n) for u, n in await connection.execute(counted.group_by(Notification.user_id))
    }
    kept = {u: int(n) for u, n in await connection.execute(counters)}
    found: dict[str, Any] = {
        u: (kept.get(u, 0), counts.get(u, 0))
        for u in counts.keys() | kept.keys()
        if kept.get(u, 0) != counts.get(u, 0)
    }
    deltas = await scalar(connection, select(func.count()).select_from(user_unread_deltas))
    if deltas:
        found["deltas"] = deltas
    return found


async def service_drift(service: RunningService, users: list[str]) -> dict[str, Any]:
    async with service.context.engine.connect() as connection:
        return await drift(connection, users)


def notification_rows(
    users: list[str], *, read_every: int = 0, cancel_every: int = 0
) -> list[dict[str, Any]]:
    """Notification rows as ``insert(Notification)`` takes them, round-robin over ``users``."""
    now = datetime.now(UTC)
    rows = []
    for i in range(len(users) * 5):
        row = Notification.build(user_id=users[i % len(users)], title=f"t{i}", message="m")
        if read_every and i % read_every == 0:
            row.is_read = True
        if cancel_every and i % cancel_every == 1:
            row.status = "cancelled"
        if i == 3:
            row.send_at = now + timedelta(hours=1)  # scheduled: counted all the same
        # Only the columns 0002 has: these rows are also inserted at that revision.
        values = {
            c.key: getattr(row, c.key)
            for c in Notification.__table__.columns
            if c.key not in COLUMNS_AFTER_0002
        }
        rows.append(values)
    return rows


COLUMNS_AFTER_0002 = frozenset(
    {"rendered_parts", "delivery_plan", "cancellation_key"}
)  # 0008, 0009


async def migrate_to(url: str, revision: str, *, down: bool = False) -> None:
    # alembic's commands run their own event loop in env.py, hence the thread.
    step = command.downgrade if down else command.upgrade
    await asyncio.to_thread(step, alembic_config(url), revision)
