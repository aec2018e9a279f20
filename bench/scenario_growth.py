"""Scenario 5: growth.

- ``growth_claim``: the scenario 1 no-op drain (same N, same worker launcher) on a database
  holding ``growth_rows`` settled notifications (``next_attempt_at`` NULL, status
  ``delivered``, each with its delivered ``notification_deliveries`` row) vs. on an empty one;
  runs alternate between the two databases.
- ``inbox_first_page`` / ``inbox_deep_page``: ``GET /v1/users/{u}/notifications?limit=20``
  (and one page deep down the list, through the service's own cursor) for a user with
  ``inbox_heavy`` notifications vs. one with ``inbox_light`` (baseline), same database, same
  ``notifier serve``; median of sequential requests.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import asyncpg
import httpx

from bench.data import insert_settled
from bench.databases import connect
from bench.figures import Figure, Target
from bench.harness import API_KEY, Api, Bench
from bench.scenario_dispatch import drain_notifier
from notifier.storage.cursors import encode_cursor

SCENARIO = "5. Growth"
HEAVY, LIGHT = "heavy-user", "light-user"
INBOX_TARGET = Target("ratio_max", round(1 / 0.9, 4), "growth ratio >= 0.9 (baseline/value)")


async def _cursor_at(connection: asyncpg.Connection, user: str, offset: int) -> str:
    row = await connection.fetchrow(
        "SELECT created_at, id FROM notifications WHERE user_id = $1 "
        "ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
        user,
        offset,
    )
    assert row is not None, f"{user} has fewer than {offset + 1} notifications"
    return encode_cursor(row["created_at"], row["id"])


async def _inbox_ms(
    client: httpx.AsyncClient, user: str, cursor: str | None, requests: int
) -> float:
    params = {"limit": "20", **({"cursor": cursor} if cursor else {})}
    timings = []
    for index in range(requests + 2):
        started = time.perf_counter()
        response = await client.get(f"/v1/users/{user}/notifications", params=params)
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        if len(response.json()["items"]) != 20:
            raise RuntimeError(f"inbox of {user} returned {len(response.json()['items'])} items")
        if index >= 2:  # two warm-up requests
            timings.append(elapsed)
    return statistics.median(timings)


async def _explain(connection: asyncpg.Connection, user: str) -> str:
    plans = []
    for title, sql in (
        (
            "inbox page",
            "SELECT * FROM notifications WHERE user_id = $1 AND (send_at IS NULL OR "
            "send_at <= now()) AND status != 'cancelled' "
            "ORDER BY created_at DESC, id DESC LIMIT 21",
        ),
        (
            "unread count",
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND (send_at IS NULL OR "
            "send_at <= now()) AND status != 'cancelled' AND is_read IS false",
        ),
    ):
        rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", user)
        plans.append(f"-- {title} ({user})\n" + "\n".join(r[0] for r in rows))
    return "\n\n".join(plans)


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    figures: list[Figure] = []
    async with bench.database("growth_empty") as empty_url, bench.database("growth_full") as url:
        empty = await connect(empty_url)
        full = await connect(url, command_timeout=900)
        try:
            bench.log(f"inserting {sizes.growth_rows} settled notifications")
            started = time.perf_counter()
            await insert_settled(
                full,
                sizes.growth_rows,
                heavy_user=HEAVY,
                heavy=sizes.inbox_heavy,
                light_user=LIGHT,
                light=sizes.inbox_light,
            )
            await full.execute("VACUUM ANALYZE notifications")
            await full.execute("VACUUM ANALYZE notification_deliveries")
            bench.log(f"  inserted in {time.perf_counter() - started:.0f}s")
            figures.append(await _claim(bench, empty_url, empty, url, full))
            figures.extend(await _inbox(bench, url, full))
        finally:
            await empty.close()
            await full.close()
    bench.note(
        SCENARIO,
        f"{sizes.growth_rows} settled rows inserted with one `INSERT … SELECT generate_series` "
        "(status delivered, next_attempt_at NULL, a delivered websocket delivery row each, "
        f"created one second apart), {sizes.inbox_heavy} of them for `{HEAVY}` and "
        f"{sizes.inbox_light} for `{LIGHT}`, the rest over 50k users; all unread (the "
        "worst case for the unread count). Then VACUUM ANALYZE. Claim runs alternate "
        "between the full database and an empty one; each is scenario 1's no-op drain of "
        f"{sizes.dispatch_n} notifications (same window).",
    )
    bench.note(
        SCENARIO,
        f"Inbox: {sizes.inbox_requests} sequential GETs (after 2 warm-up ones) per "
        "measurement with the API key, median; deep page = the page after the cursor of "
        f"the row {sizes.inbox_heavy - 100} (heavy) or {sizes.inbox_light - 21} (light) from "
        "the top, built with the service's `encode_cursor`. The inbox ratio is value / "
        "baseline (lower is better), so the growth target >= 0.9 reads ratio <= 1.11 here.",
    )
    return figures


async def _claim(
    bench: Bench,
    empty_url: str,
    empty: asyncpg.Connection,
    full_url: str,
    full: asyncpg.Connection,
) -> Figure:
    n = bench.sizes.dispatch_n
    base, subject = [], []
    for run in range(bench.runs):
        bench.log(f"growth claim run {run + 1}/{bench.runs}")
        for connection in (empty, full):
            await connection.execute("ANALYZE notifications")
        drain = await drain_notifier(
            bench, empty_url, empty, n, module="bench.noop_worker", args=(), label="-empty"
        )
        base.append(drain.rate)
        drain = await drain_notifier(
            bench, full_url, full, n, module="bench.noop_worker", args=(), label="-full"
        )
        subject.append(drain.rate)
        await empty.execute("TRUNCATE notifications CASCADE")
    figure = Figure(
        "growth_claim",
        "notifications/s",
        subject,
        base,
        "same drain on an empty table, notifications/s",
        "higher",
        "5. Growth",
        Target("ratio_min", 0.9, ">= 0.9x empty table"),
    )
    if figure.met is False:

        async def profile(path: Path) -> None:
            await drain_notifier(
                bench,
                full_url,
                full,
                max(100, int(figure.value * bench.sizes.profile_seconds * 1.5)),
                module="bench.noop_worker",
                args=(),
                profile_to=path,
                label="-full-profiled",
            )

        await bench.profiled("growth_claim (worker process, full table)", profile)
    return figure


async def _inbox(bench: Bench, url: str, connection: asyncpg.Connection) -> list[Figure]:
    sizes = bench.sizes
    deep_heavy = await _cursor_at(connection, HEAVY, sizes.inbox_heavy - 100)
    deep_light = await _cursor_at(connection, LIGHT, sizes.inbox_light - 21)
    api: Api = await bench.start_api(url)
    first: dict[str, list[float]] = {HEAVY: [], LIGHT: []}
    deep: dict[str, list[float]] = {HEAVY: [], LIGHT: []}
    try:
        async with httpx.AsyncClient(
            base_url=api.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        ) as client:
            for run in range(bench.runs):
                bench.log(f"inbox run {run + 1}/{bench.runs}")
                for user in (LIGHT, HEAVY):
                    first[user].append(await _inbox_ms(client, user, None, sizes.inbox_requests))
                for user, cursor in ((LIGHT, deep_light), (HEAVY, deep_heavy)):
                    deep[user].append(await _inbox_ms(client, user, cursor, sizes.inbox_requests))
                bench.log(
                    f"  first page {first[LIGHT][-1]:.1f} vs {first[HEAVY][-1]:.1f} ms, deep "
                    f"{deep[LIGHT][-1]:.1f} vs {deep[HEAVY][-1]:.1f} ms (light vs heavy)"
                )
    finally:
        await bench.stop(api.child)
    figures = [
        Figure(
            "inbox_first_page",
            "ms",
            first[HEAVY],
            first[LIGHT],
            f"same request for a user with {sizes.inbox_light} notifications, ms",
            "lower",
            SCENARIO,
            INBOX_TARGET,
        ),
        Figure(
            "inbox_deep_page",
            "ms",
            deep[HEAVY],
            deep[LIGHT],
            f"same request for a user with {sizes.inbox_light} notifications, ms",
            "lower",
            SCENARIO,
            INBOX_TARGET,
        ),
    ]
    if bench.profile and any(f.met is False for f in figures):
        bench.profiles["inbox (EXPLAIN ANALYZE)"] = await _explain(connection, HEAVY)
    return figures
