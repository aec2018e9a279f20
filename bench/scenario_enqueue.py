"""Scenario 2: enqueue throughput.

- ``enqueue_single``: ``POST /v1/notifications`` from ``bench/loadgen.py`` (its own process,
  a minimal HTTP/1.1 keep-alive client, 64 concurrent connections, a fixed time after a
  warm-up) against one ``notifier serve`` process. Baseline: the same load against
  ``bench/bare_app.py`` (a constant-JSON FastAPI endpoint, served by uvicorn exactly as
  ``notifier serve`` serves the service).
- ``enqueue_template``: the same load as ``enqueue_single``, each notification by ``template``
  + ``data`` (rendered at enqueue in its recipient's locale: en, zh-CN or fr-BE → fr).
  Baseline: ``enqueue_single`` in the same run (same texts, sent ready-made).
- ``enqueue_batch``: ``POST /v1/notifications/batch`` with 1000 per request, one request at a
  time. Baseline: raw asyncpg ``INSERT … SELECT * FROM unnest(…)`` of the same rows (the same
  columns of ``notifications`` and ``notification_deliveries``, with the wake-up NOTIFY), one
  transaction per 1000, one at a time.

No worker runs: this measures the API's write path alone.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.data import DISPATCH_WAKEUP_CHANNEL
from bench.databases import connect
from bench.figures import Figure, Target
from bench.harness import API_KEY, Api, Bench
from bench.loadgen import notification
from bench.processes import PYTHON

SCENARIO = "2. Enqueue throughput"

_INSERT_NOTIFICATIONS = """
INSERT INTO notifications (
    id, user_id, title, message, notification_type, priority, priority_rank, channels,
    is_read, related_task_id, action_url, notification_metadata, recipient, status,
    retry_count, send_at, expires_at, created_at, updated_at, dedupe_key, next_attempt_at)
SELECT id, user_id, title, message, notification_type, priority, priority_rank, channels,
       false, NULL, NULL, metadata, NULL, 'pending', 0, NULL, NULL, now_, now_, NULL, now_
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::smallint[], $8::jsonb[], $9::jsonb[], $10::timestamptz[])
     AS t(id, user_id, title, message, notification_type, priority, priority_rank, channels,
          metadata, now_)
"""
_INSERT_DELIVERIES = """
INSERT INTO notification_deliveries (
    notification_id, channel, status, attempts, attempts_at_requeue, unknown_outcomes,
    updated_at)
SELECT id, channel, 'pending', 0, 0, 0, now_
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS t(id, channel, now_)
"""


# The service's per-API-key limit (200/s by default) is a guard against a runaway producer; at
# its default it, not the write path, would be what enqueue_single measures (429s past 200/s).
# Limits far above any rate reached here keep the limiter's code on the path but out of the way.
UNLIMITED = {
    "NOTIFIER_RATE_LIMIT_KEY_PER_SECOND": "1000000",
    "NOTIFIER_RATE_LIMIT_KEY_BURST": "1000000",
    "NOTIFIER_RATE_LIMIT_RECIPIENT_PER_MINUTE": "1000000",
    "NOTIFIER_RATE_LIMIT_RECIPIENT_BURST": "1000000",
}


async def _loadgen(bench: Bench, api: Api, *extra: str) -> dict[str, Any]:
    child = await bench.spawn(
        "loadgen",
        [PYTHON, "-m", "bench.loadgen", "closed", "--url", api.base_url, "--key", API_KEY, *extra],
        pipe=True,
    )
    try:
        return await child.event("result", timeout=600)
    finally:
        await bench.stop(child)


# en, zh-CN and fr, with a Babel filter: what a producer's template does at enqueue.
TEMPLATE_KEY = "bench.build"
TEMPLATE = {
    "description": "bench: enqueue_template",
    "default_locale": "en",
    "locales": {
        "en": {
            "title": "Build finished",
            "message": "Your build #{{ data.build }} finished successfully in "
            "{{ data.seconds|number }} s.",
        },
        "zh-CN": {
            "title": "构建完成",
            "message": "您的构建 #{{ data.build }} 已成功完成，用时 {{ data.seconds|number }} 秒。",  # noqa: RUF001
        },
        "fr": {
            "title": "Build terminé",
            "message": "Votre build n° {{ data.build }} a réussi en {{ data.seconds|number }} s.",
        },
    },
}
_LOCALES = ("en", "zh-CN", "fr-BE")


async def _prepare_templates(api: Api, users: int) -> None:
    """The template, and a recipient profile with a locale for each load user."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as client:
        response = await client.put(f"/v1/templates/{TEMPLATE_KEY}", json=TEMPLATE)
        response.raise_for_status()
        for i in range(users):
            response = await client.put(
                f"/v1/users/load-{i}/recipient", json={"locale": _LOCALES[i % len(_LOCALES)]}
            )
            response.raise_for_status()


async def _single(bench: Bench, api: Api, *extra: str) -> float:
    sizes = bench.sizes
    result = await _loadgen(
        bench,
        api,
        "--concurrency",
        str(sizes.enqueue_concurrency),
        "--seconds",
        str(sizes.enqueue_seconds),
        "--warmup",
        str(sizes.enqueue_warmup),
        "--users",
        "1000",
        *extra,
    )
    if result["errors"]:
        bench.log(f"  {api.child.name}: errors {result['statuses']}")
    rate = float(result["count"]) / float(result["seconds"])
    what = " by template" if extra else ""
    bench.log(
        f"  {api.child.name}{what}: {result['count']} in {result['seconds']:.1f}s = {rate:.0f}/s"
    )
    return rate


async def _batch(bench: Bench, api: Api) -> float:
    sizes = bench.sizes
    result = await _loadgen(
        bench,
        api,
        "--path",
        "/v1/notifications/batch",
        "--concurrency",
        "1",
        "--requests",
        str(sizes.batch_requests),
        "--batch-size",
        str(sizes.batch_size),
        "--warmup",
        "0",
        "--users",
        "1000",
    )
    if result["errors"]:
        raise api.child.fail(f"batch enqueue answered {result['statuses']}")
    rate = float(result["items"]) / float(result["seconds"])
    bench.log(f"  batch endpoint: {result['items']} in {result['seconds']:.2f}s = {rate:.0f}/s")
    return rate


async def _raw_batch(bench: Bench, connection: asyncpg.Connection) -> float:
    """The same rows as the batch endpoint makes, built in Python and inserted with unnest."""
    sizes = bench.sizes
    started = time.perf_counter()
    for b in range(sizes.batch_requests):
        items = [
            notification(f"load-{(b * sizes.batch_size + i) % 1000}")
            for i in range(sizes.batch_size)
        ]
        now = datetime.now(UTC)
        ids = [uuid.uuid4() for _ in items]
        async with connection.transaction():
            await connection.execute(
                _INSERT_NOTIFICATIONS,
                ids,
                [i["user_id"] for i in items],
                [i["title"] for i in items],
                [i["message"] for i in items],
                [i["notification_type"] for i in items],
                [i["priority"] for i in items],
                [2 for _ in items],
                [json.dumps(i["channels"]) for i in items],
                [json.dumps({}) for _ in items],
                [now for _ in items],
            )
            pairs = [(ident, c) for ident, i in zip(ids, items, strict=True) for c in i["channels"]]
            await connection.execute(
                _INSERT_DELIVERIES,
                [p[0] for p in pairs],
                [p[1] for p in pairs],
                [now for _ in pairs],
            )
            await connection.execute("SELECT pg_notify($1, '')", DISPATCH_WAKEUP_CHANNEL)
    seconds = time.perf_counter() - started
    n = sizes.batch_requests * sizes.batch_size
    bench.log(f"  raw unnest: {n} in {seconds:.2f}s = {n / seconds:.0f}/s")
    return n / seconds


async def run(bench: Bench) -> list[Figure]:
    runs = bench.runs
    figures: list[Figure] = []
    async with bench.database("enqueue") as url:
        service = await bench.start_api(url, env=UNLIMITED)
        bare = await bench.start_api(url, module="bench.bare_app", args=(), name="bare-app")
        connection = await connect(url)
        try:
            await _prepare_templates(service, 1000)
            base, subject, templated = [], [], []
            for run in range(runs):
                bench.log(f"enqueue single run {run + 1}/{runs}")
                base.append(await _single(bench, bare))
                subject.append(await _single(bench, service))
                templated.append(await _single(bench, service, "--template", TEMPLATE_KEY))
            single = Figure(
                "enqueue_single",
                "requests/s",
                subject,
                base,
                "bare FastAPI constant-JSON endpoint requests/s",
                "higher",
                SCENARIO,
                Target("ratio_min", 0.4, ">= 0.4x bare endpoint (issue 15; stretch 0.7x)"),
            )
            figures.append(single)
            figures.append(
                Figure(
                    "enqueue_template",
                    "requests/s",
                    templated,
                    list(subject),
                    "enqueue_single requests/s (same run, texts sent ready-made)",
                    "higher",
                    SCENARIO,
                    Target("ratio_min", 0.8, ">= 0.8x enqueue_single"),
                )
            )
            base, subject = [], []
            for run in range(runs):
                bench.log(f"enqueue batch run {run + 1}/{runs}")
                base.append(await _raw_batch(bench, connection))
                subject.append(await _batch(bench, service))
            batch = Figure(
                "enqueue_batch",
                "notifications/s",
                subject,
                base,
                "raw asyncpg INSERT ... SELECT unnest notifications/s",
                "higher",
                SCENARIO,
                Target("ratio_min", 0.5, ">= 0.5x raw unnest"),
            )
            figures.append(batch)
        finally:
            await connection.close()
            await bench.stop(bare.child)
            await bench.stop(service.child)
        await _profiles(bench, url, single, batch)
    sizes = bench.sizes
    bench.note(
        SCENARIO,
        "Single: `bench/loadgen.py closed` (its own process, a minimal HTTP/1.1 keep-alive "
        f"client on asyncio streams, {sizes.enqueue_concurrency} connections, "
        f"{sizes.enqueue_warmup:.1f} s warm-up then {sizes.enqueue_seconds:.0f} s "
        "measured), alternating run by run between the bare app and the service, both up "
        "for the whole scenario. The bare app (`bench/bare_app.py`) is bench-only: the "
        "service has no constant endpoint. It is served through "
        "`notifier.api.server.build_server`, the function `notifier serve` uses, so host, "
        "flags and event loop are the same. The load "
        "generator is one Python process on the same 2 cores. Until 2026-11-29 it used httpx, "
        "which spends more CPU per request than the bare app: against the bare app it made "
        "16-25 requests/s where this client makes 1,400-1,700 on the same busy machine, so "
        "the old baseline measured the client and flattered the service's ratio.",
    )
    bench.note(
        SCENARIO,
        f"Batch: {sizes.batch_requests} requests of {sizes.batch_size} per run, one at a time; "
        "the baseline builds the same rows in Python (ids, timestamps, JSON) and inserts them "
        "with two `INSERT … SELECT * FROM unnest(…)` statements and the NOTIFY, one "
        "transaction per batch, in the bench process.",
    )
    return figures


async def _profiles(bench: Bench, url: str, single: Figure, batch: Figure) -> None:
    sizes = bench.sizes
    if single.met is False:

        async def profile_single(path: Path) -> None:
            api = await bench.start_api(url, env=UNLIMITED, profile_to=path, name="api-profiled")
            try:
                await _loadgen(
                    bench,
                    api,
                    "--concurrency",
                    str(sizes.enqueue_concurrency),
                    "--seconds",
                    str(sizes.profile_seconds),
                )
            finally:
                await bench.stop(api.child, grace=120)

        await bench.profiled("enqueue_single (API process)", profile_single)
    if batch.met is False:

        async def profile_batch(path: Path) -> None:
            api = await bench.start_api(url, env=UNLIMITED, profile_to=path, name="api-profiled")
            try:
                await _batch(bench, api)
            finally:
                await bench.stop(api.child, grace=120)

        await bench.profiled("enqueue_batch (API process)", profile_batch)
