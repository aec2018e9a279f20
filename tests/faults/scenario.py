"""What the fault cases and the soak share: the service processes' environment, a producer's
HTTP calls, and the read-only database queries that judge the outcome.

All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from tests.faults.processes import base_env, poll_until
from tests.support.service import make_settings, running_service

API_KEY = "fault-key-1-0123456789"
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

    async def enqueue(self, item: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post("/v1/notifications", json=item)
        assert response.status_code == 202, f"{response.status_code}: {response.text[:500]}"
        return dict(response.json())

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


class RowReader:
    """Reads one test's rows over a single connection, kept open between reads (the shared
    server's connections are for every suite running at the moment). When the server refuses
    a connection or drops this one, a read answers None and the next read reconnects, so a
    probe of ``poll_until`` simply tries again.

        async with RowReader(url) as rows:
            state = await rows.notification(nid)   # None while the database is unreachable
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._connection: asyncpg.Connection | None = None
        self.last_error: str | None = None

    async def _connected(self) -> asyncpg.Connection | None:
        if self._connection is None or self._connection.is_closed():
            try:
                self._connection = await db_connect(self.database_url)
            except AssertionError as exc:
                self.last_error = str(exc)
                return None
        return self._connection

    async def notification(self, notification_id: str) -> dict[str, Any] | None:
        """Status, retry_count, lease_owner, and per channel status, attempts, last_error,
        next_attempt_at."""
        connection = await self._connected()
        if connection is None:
            return None
        key = uuid.UUID(notification_id)
        try:
            row = await connection.fetchrow(
                "SELECT status, retry_count, lease_owner FROM notifications WHERE id = $1", key
            )
            channels = await connection.fetch(
                "SELECT channel, status, attempts, last_error, next_attempt_at "
                "FROM notification_deliveries WHERE notification_id = $1",
                key,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            await self.close()
            return None
        assert row is not None, f"no notification {notification_id}"
        return {**dict(row), "channels": {c["channel"]: dict(c) for c in channels}}

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Any read; here the database must be reachable."""
        connection = await self._connected()
        assert connection is not None, self.last_error
        return list(await connection.fetch(query, *args))

    async def wait(
        self,
        notification_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        what: str,
        timeout: float = 30.0,  # noqa: ASYNC109
        logs: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Poll (bounded) until the notification's rows satisfy ``predicate``; a failure quotes
        the last state and ``logs()`` (the service processes' logs)."""

        async def probe() -> tuple[bool, Any]:
            state = await self.notification(notification_id)
            if state is None:
                return False, self.last_error
            return predicate(state), state

        try:
            return cast(
                dict[str, Any],
                await poll_until(probe, timeout=timeout, interval=0.1, what=what),
            )
        except AssertionError as exc:
            if logs is None:
                raise
            raise AssertionError(f"{exc}\n{logs()}") from None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    async def __aenter__(self) -> RowReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def local_api(database_url: str, **settings: Any) -> AsyncIterator[Producer]:
    """The real API served in the test's own process (uvicorn on a loopback port), and a
    producer calling it over HTTP: cheaper than a ``serve`` subprocess where the API is not
    the process a fault strikes."""
    async with running_service(make_settings(database_url, api_keys=API_KEY, **settings)) as api:
        producer = Producer(api.base_url)
        try:
            yield producer
        finally:
            await producer.aclose()
