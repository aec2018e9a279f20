"""The operator console's stats (``GET /v1/admin/stats``) at 1M notifications on PostgreSQL.

    .venv/bin/python -m bench.admin_stats                      # 1M notifications, 300 requests
    .venv/bin/python -m bench.admin_stats --rows 100000 --requests 50   # a quick look

Not part of ``bench.run`` (which rewrites RESULTS.md); its figures are copied into RESULTS.md
by hand. What it does:

- a database of its own, migrated, with ``--rows`` notifications spread evenly over the last
  ``--hours`` (default 24: an hour's window holds 1/24 of them), each with its email channel's
  history as the state machine records it: ``channel.delivered`` (with ``latency_ms``, 90%),
  ``channel.failed`` (5%), ``channel.skipped`` (3%), or ``channel.retrying`` then
  ``channel.delivered`` (2%), and a ``notification.settled`` row; plus ``--queued``
  notifications still pending (the queue the stats count now). ``VACUUM ANALYZE`` after, as
  autovacuum would (it is off on these machines);
- a real ``notifier serve`` process, and one client sending the requests one after another,
  alternating the figure with its baseline request so both see the same noise:
  - ``stats``: ``GET /v1/admin/stats?window_seconds=3600``; baseline ``GET /healthz`` (the same
    HTTP path and authentication-free app, no database): the ratio is what the two queries
    and the series cost;
  - ``stats_day``: ``window_seconds=86400`` (every row of the 24 h), the worst window;
- the same two queries straight on asyncpg (no HTTP, no Python series), against a baseline of
  ``SELECT count(*)`` over the same window's rows: what the aggregation adds to reading them.

Prints one JSON line per figure (p50/p95/p99 in ms, the baseline's, and the ratio of p95s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.databases import connect
from bench.harness import API_KEY, Bench
from bench.sizes import FULL
from notifier.models.transition import CONSOLE_KINDS
from notifier.storage.admin_stats import PG_WINDOW, QUEUE, StatsWindow

# One email channel per notification; outcomes by g % 100 (deterministic, no random()).
_SEED = """
WITH n AS (
    INSERT INTO notifications (
        id, user_id, title, message, notification_type, priority, priority_rank, channels,
        is_read, notification_metadata, status, retry_count, created_at, updated_at)
    SELECT gen_random_uuid(), 'user-' || (g % 50000), 'Bench ' || g, 'Message ' || g, 'info',
           'normal', 2, '["email"]'::jsonb, false, '{}'::jsonb,
           CASE WHEN g % 100 < 5 THEN 'failed' WHEN g % 100 < 8 THEN 'skipped'
                ELSE 'delivered' END,
           CASE WHEN g % 100 >= 98 THEN 1 ELSE 0 END,
           now() - ($2 * interval '1 hour') * g / $1,
           now() - ($2 * interval '1 hour') * g / $1
    FROM generate_series(1, $1) AS g
    RETURNING id, user_id, created_at, status, retry_count
), d AS (
    INSERT INTO notification_deliveries (
        notification_id, channel, status, attempts, attempts_at_requeue, unknown_outcomes,
        updated_at)
    SELECT id, 'email', status, retry_count + 1, 0, 0, created_at FROM n
    RETURNING notification_id
)
INSERT INTO notification_transitions (
    id, notification_id, user_id, kind, channel, from_status, to_status, attempts, latency_ms,
    occurred_at)
SELECT gen_random_uuid(), n.id, n.user_id, t.kind, t.channel, t.from_status, t.to_status,
       t.attempts, t.latency_ms, n.created_at + t.after
FROM n CROSS JOIN LATERAL (
    VALUES
        ('channel.retrying', 'email', 'pending', 'retrying', 1, NULL::int,
         interval '50 milliseconds', n.retry_count = 1),
        ('channel.' || n.status, 'email', CASE WHEN n.retry_count = 1 THEN 'retrying'
                                               ELSE 'pending' END,
         n.status, n.retry_count + 1,
         CASE WHEN n.status = 'delivered'
              THEN 20 + (abs(hashtext(n.id::text)) % 400) + n.retry_count * 2000 END,
         interval '1 millisecond' * (20 + (abs(hashtext(n.id::text)) % 400)
                                     + n.retry_count * 2000), true),
        ('notification.settled', NULL, 'pending', n.status, NULL, NULL,
         interval '500 milliseconds', true)
) AS t(kind, channel, from_status, to_status, attempts, latency_ms, after, present)
WHERE t.present
"""

_QUEUED = """
WITH n AS (
    INSERT INTO notifications (
        id, user_id, title, message, notification_type, priority, priority_rank, channels,
        is_read, notification_metadata, status, retry_count, created_at, updated_at,
        next_attempt_at)
    SELECT gen_random_uuid(), 'queued-' || g, 'Queued ' || g, 'm', 'info', 'normal', 2,
           '["email"]'::jsonb, false, '{}'::jsonb, 'pending', 0, now(), now(), now()
    FROM generate_series(1, $1) AS g
    RETURNING id
)
INSERT INTO notification_deliveries (
    notification_id, channel, status, attempts, attempts_at_requeue, unknown_outcomes,
    updated_at)
SELECT id, 'email', 'pending', 0, 0, 0, now() FROM n
"""


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": at(0.5),
        "p95": at(0.95),
        "p99": at(0.99),
        "mean": round(statistics.mean(ordered), 2),
    }


def figure(name: str, value: list[float], baseline: list[float], baseline_name: str) -> None:
    v, b = summary(value), summary(baseline)
    print(
        json.dumps(
            {
                "name": name,
                "unit": "ms",
                "value": v,
                "baseline_name": baseline_name,
                "baseline": b,
                "ratio_p95": round(v["p95"] / b["p95"], 2) if b["p95"] else None,
                "samples": len(value),
            }
        ),
        flush=True,
    )


async def seed(url: str, rows: int, hours: float, queued: int, bench: Bench) -> None:
    connection = await connect(url)
    try:
        started = time.monotonic()
        chunk = 100_000
        for offset in range(0, rows, chunk):
            # Each chunk spreads its rows over the same span, so the chunks interleave in time.
            await connection.execute(_SEED, min(chunk, rows - offset), hours)
            bench.log(f"seeded {min(offset + chunk, rows):,} notifications")
        await connection.execute(_QUEUED, queued)
        await connection.execute("VACUUM ANALYZE")
        counts = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM notifications) AS n, "
            "(SELECT count(*) FROM notification_transitions) AS t, "
            "(SELECT count(*) FROM notification_transitions "
            " WHERE occurred_at >= now() - interval '1 hour') AS hour"
        )
        bench.log(
            f"{counts['n']:,} notifications, {counts['t']:,} transitions "
            f"({counts['hour']:,} in the last hour) in {time.monotonic() - started:.0f} s"
        )
    finally:
        await connection.close()


async def timed_get(client: httpx.AsyncClient, path: str) -> float:
    started = time.perf_counter()
    response = await client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


async def over_http(base_url: str, requests: int) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        for _ in range(5):  # warm-up: connections, plans, caches
            await timed_get(client, "/v1/admin/stats")
            await timed_get(client, "/healthz")
        body = (await client.get("/v1/admin/stats")).json()
        email = body["channels"]["email"]
        print(
            f"[bench] last hour, email: delivered {sum(email['delivered']):,} failed "
            f"{sum(email['failed']):,} skipped {sum(email['skipped']):,}; queue {email['queue']}",
            file=sys.stderr,
        )
        stats, day, health = [], [], []
        for _ in range(requests):
            stats.append(await timed_get(client, "/v1/admin/stats?window_seconds=3600"))
            health.append(await timed_get(client, "/healthz"))
        for _ in range(max(10, requests // 10)):
            day.append(await timed_get(client, "/v1/admin/stats?window_seconds=86400"))
    figure("admin_stats_http_1h", stats, health, "healthz_http")
    figure("admin_stats_http_24h", day, health, "healthz_http")


async def in_database(url: str, requests: int) -> None:
    connection = await connect(url)
    window = StatsWindow.ending(3600, datetime.now(UTC))
    pg_window = str(PG_WINDOW).replace(":step", "$1").replace(":start", "$2")
    queue = str(QUEUE).replace(":now", "$1")
    count = (
        f"SELECT count(*) FROM notification_transitions WHERE occurred_at >= $1 AND {CONSOLE_KINDS}"
    )
    try:
        await connection.execute("SET work_mem = '32MB'")  # as the endpoint's transaction does
        queries, baseline = [], []
        for i in range(requests + 5):
            started = time.perf_counter()
            await connection.fetch(pg_window, timedelta(seconds=window.step_seconds), window.start)
            await connection.fetch(queue, window.start)
            middle = time.perf_counter()
            await connection.fetchval(count, window.start)
            ended = time.perf_counter()
            if i >= 5:
                queries.append((middle - started) * 1000)
                baseline.append((ended - middle) * 1000)
    finally:
        await connection.close()
    figure("admin_stats_queries_1h", queries, baseline, "count_window_rows")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--queued", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-admin-") as workdir:
        bench = Bench(FULL, 1, Path(workdir))
        try:
            async with bench.database("admin_stats") as url:
                await seed(url, args.rows, args.hours, args.queued, bench)
                api = await bench.start_api(url)
                await over_http(api.base_url, args.requests)
                await bench.stop(api.child)
                await in_database(url, args.requests)
        finally:
            await bench.stop_all()


if __name__ == "__main__":
    asyncio.run(main())
