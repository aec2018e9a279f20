"""Rows for the benchmarks, inserted straight with SQL (``INSERT … SELECT generate_series``).

The rows are what ``Notification.build`` makes (one pending ``notification_deliveries`` row per
channel, ``next_attempt_at`` = now, priority ``normal``), or, for ``insert_settled``, what a
drained notification looks like afterwards (``next_attempt_at`` NULL, status ``delivered``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg

DISPATCH_WAKEUP_CHANNEL = "notifier_dispatch"  # notifier.storage.notifications

_QUEUED = """
WITH n AS (
    INSERT INTO notifications (
        id, user_id, title, message, notification_type, priority, priority_rank, channels,
        is_read, notification_metadata, recipient, status, retry_count, created_at,
        updated_at, next_attempt_at)
    SELECT gen_random_uuid(), $2 || (g % $3), 'Bench ' || g,
           'Benchmark notification number ' || g, 'info', 'normal', 2, $4::jsonb,
           false, '{}'::jsonb, $5::jsonb, 'pending', 0, now(), now(), now()
    FROM generate_series(1, $1) AS g
    RETURNING id
)
INSERT INTO notification_deliveries (
    notification_id, channel, status, attempts, attempts_at_requeue, unknown_outcomes,
    updated_at)
SELECT n.id, c.channel, 'pending', 0, 0, 0, now()
FROM n CROSS JOIN jsonb_array_elements_text($4::jsonb) AS c(channel)
"""

_SETTLED = """
WITH n AS (
    INSERT INTO notifications (
        id, user_id, title, message, notification_type, priority, priority_rank, channels,
        is_read, notification_metadata, status, retry_count, created_at, updated_at)
    SELECT gen_random_uuid(),
           CASE WHEN g <= $2 THEN $3
                WHEN g <= $2 + $4 THEN $5
                ELSE 'filler-' || (g % 50000) END,
           'Old ' || g, 'A delivered notification, number ' || g, 'info', 'normal', 2,
           '["websocket"]'::jsonb, false, '{}'::jsonb, 'delivered', 0,
           now() - interval '1 day' - g * interval '1 second',
           now() - interval '1 day' - g * interval '1 second'
    FROM generate_series(1, $1) AS g
    RETURNING id, updated_at
)
INSERT INTO notification_deliveries (
    notification_id, channel, status, attempts, attempts_at_requeue, unknown_outcomes,
    updated_at)
SELECT id, 'websocket', 'delivered', 1, 0, 0, updated_at FROM n
"""


async def queue_notifications(
    connection: asyncpg.Connection,
    n: int,
    *,
    channels: tuple[str, ...] = ("websocket",),
    user_prefix: str = "user-",
    users: int = 100,
    recipient: dict[str, Any] | None = None,
) -> float:
    """Insert ``n`` due notifications and NOTIFY the workers in one transaction; returns the
    ``time.time()`` right after the commit (the moment the rows became visible)."""
    async with connection.transaction():
        await connection.execute(
            _QUEUED,
            n,
            user_prefix,
            users,
            json.dumps(list(channels)),
            json.dumps(recipient) if recipient is not None else None,
        )
        await connection.execute("SELECT pg_notify($1, '')", DISPATCH_WAKEUP_CHANNEL)
    return time.time()


async def insert_settled(
    connection: asyncpg.Connection,
    n: int,
    *,
    heavy_user: str,
    heavy: int,
    light_user: str,
    light: int,
) -> None:
    """``n`` settled (delivered) notifications: ``heavy`` of them for ``heavy_user``, ``light``
    for ``light_user``, the rest spread over 50k other users; created one second apart.

    A bulk load: the secondary indexes of both tables are dropped first and rebuilt afterwards
    from their own ``pg_indexes`` definitions (the end state is the migrated schema), and the
    foreign-key trigger is skipped (``session_replication_role``; the rows are consistent by
    construction). Maintaining ten indexes row by row would take minutes here."""
    async with connection.transaction():
        definitions = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename IN ('notifications', 'notification_deliveries') "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        for row in definitions:
            await connection.execute(f'DROP INDEX "{row["indexname"]}"')
        await connection.execute("SET LOCAL session_replication_role = replica")
        await connection.execute("SET LOCAL maintenance_work_mem = '256MB'")
        await connection.execute(_SETTLED, n, heavy, heavy_user, light, light_user)
        for row in definitions:
            await connection.execute(row["indexdef"])


async def unsettled(connection: asyncpg.Connection) -> int:
    """Notifications a worker still has to look at (the claim's partial index)."""
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM notifications WHERE next_attempt_at IS NOT NULL"
        )
    )


async def any_unsettled(connection: asyncpg.Connection) -> bool:
    return bool(
        await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM notifications WHERE next_attempt_at IS NOT NULL)"
        )
    )


# What autovacuum's ANALYZE covers for the tables the hot paths read.
_QUEUE_TABLES = "notifications, notification_deliveries, user_unread_counts"


async def prime_statistics(
    connection: asyncpg.Connection,
    n: int,
    *,
    channels: tuple[str, ...] = ("websocket",),
    user_prefix: str = "user-",
    users: int = 100,
) -> None:
    """Give the planner the statistics of a queue of ``n`` rows, as autovacuum would on a
    default server, then empty the queue again (the statistics stay until the next ANALYZE).

    This machine's PostgreSQL runs with ``autovacuum = off``: a bench database never got
    statistics, and the planner, guessing, read ``notification_deliveries`` whole for every
    claim, outcome batch and ack (10,867 sequential scans, 68 million rows read in one 30 s
    latency run), more so as the table grew: the "latency grows from run to run" of the
    earlier results. Call it with no worker running: the queued rows must not be claimed."""
    await queue_notifications(
        connection, n, channels=channels, user_prefix=user_prefix, users=users
    )
    await connection.execute(f"ANALYZE {_QUEUE_TABLES}")
    await connection.execute("DELETE FROM notifications WHERE next_attempt_at IS NOT NULL")


async def refresh_statistics(connection: asyncpg.Connection) -> None:
    """Between runs: what autovacuum would have done meanwhile on a default server."""
    await connection.execute(f"VACUUM ANALYZE {_QUEUE_TABLES}")
