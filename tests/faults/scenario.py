"""What the fault cases and the soak share: the service processes' environment, a producer's
HTTP calls, and the read-only database queries that judge the outcome.

All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from tests.faults.processes import base_env

API_KEY = "fault-key-1"
VAPID_SUBJECT = "mailto:ops@notifier.test"


def service_env(database_url: str, **settings: object) -> dict[str, str]:
    """NOTIFIER_* for ``serve`` and ``worker``: rate limits off (the suites enqueue as fast as
    they can), short leases and polls so faults heal within a test's time."""
    values: dict[str, object] = {
        "database_url": database_url,
        "api_keys": API_KEY,
        "token_secret": secrets.token_urlsafe(32),
        "log_level": "warning",
        "rate_limit_key_per_second": 0,
        "rate_limit_recipient_per_minute": 0,
        "lease_seconds": 5,
        "poll_interval_seconds": 0.5,
        "retry_base_seconds": 0.5,
        "retry_max_seconds": 3,
        "worker_concurrency": 16,
        "worker_batch_size": 16,
    }
    values.update(settings)
    return base_env(**values)


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def db_connect(database_url: str) -> asyncpg.Connection:
    dsn = asyncpg_dsn(database_url)
    try:
        return await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise AssertionError(
            f"PostgreSQL unreachable at {dsn} ({type(exc).__name__}: {exc})"
        ) from exc


class Producer:
    """A producer service calling the API with its key."""

    def __init__(self, base_url: str, *, timeout: float = 30) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def put_recipient(self, user_id: str, **fields: Any) -> None:
        response = await self.http.put(f"/v1/users/{user_id}/recipient", json=fields)
        assert response.status_code in (200, 201), response.text

    async def token(self, user_id: str) -> str:
        response = await self.http.post(f"/v1/users/{user_id}/tokens")
        assert response.status_code in (200, 201), response.text
        return str(response.json()["token"])

    async def subscribe_push(self, user_id: str, subscription: dict[str, Any]) -> None:
        response = await self.http.post(
            f"/v1/users/{user_id}/push-subscriptions", json=subscription
        )
        assert response.status_code in (200, 201), response.text

    async def enqueue_batch(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await self.http.post("/v1/notifications/batch", json={"notifications": items})
        assert response.status_code == 202, f"{response.status_code}: {response.text[:500]}"
        return list(response.json()["notifications"])

    async def get(self, notification_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/notifications/{notification_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


# --- judging the outcome from the database ---------------------------------------------------


async def status_counts(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch("SELECT status, count(*) AS n FROM notifications GROUP BY 1")
    return {row["status"]: row["n"] for row in rows}


async def channel_counts(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch(
        "SELECT channel || ':' || status AS k, count(*) AS n FROM notification_deliveries "
        "GROUP BY 1"
    )
    return {row["k"]: row["n"] for row in rows}


async def stuck_past_lease(connection: asyncpg.Connection, slack_seconds: float) -> int:
    """Rows due more than ``slack_seconds`` ago that nobody has picked up."""
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM notifications WHERE next_attempt_at IS NOT NULL "
            "AND next_attempt_at < now() - make_interval(secs => $1)",
            slack_seconds,
        )
    )


async def leased_unsent(connection: asyncpg.Connection, channel: str) -> list[str]:
    """Ids of notifications a worker holds right now whose ``channel`` is not yet recorded as
    a success: the sends that are in flight."""
    rows = await connection.fetch(
        "SELECT n.id FROM notifications n JOIN notification_deliveries d "
        "ON d.notification_id = n.id AND d.channel = $1 "
        "WHERE n.lease_owner IS NOT NULL AND d.status IN ('pending', 'retrying')",
        channel,
    )
    return [str(row["id"]) for row in rows]


async def deliveries(connection: asyncpg.Connection) -> dict[tuple[str, str], dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT notification_id, channel, status, attempts FROM notification_deliveries"
    )
    return {
        (str(r["notification_id"]), r["channel"]): {
            "status": r["status"],
            "attempts": r["attempts"],
        }
        for r in rows
    }
