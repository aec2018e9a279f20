"""What the API needs at run time, built once per app from settings (or handed in by the CLI
when API and worker share a process)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notifier.auth import ApiKeyRing, UserTokens
from notifier.settings import Settings
from notifier.storage.db import create_engine, create_session_factory


@dataclass
class ServiceContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    api_keys: ApiKeyRing
    tokens: UserTokens
    vapid_private_key: str | None = None
    # Called after a commit that made rows due, for an in-process worker to wake up (on
    # PostgreSQL the same wake-up travels as NOTIFY inside the transaction).
    after_enqueue: list[Callable[[], None]] = field(default_factory=list)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    owns_engine: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceContext:
        if not settings.api_keys:
            raise ValueError("NOTIFIER_API_KEYS is empty: set at least one producer API key")
        if settings.token_secret is None:
            raise ValueError("NOTIFIER_TOKEN_SECRET is not set: user tokens cannot be signed")
        engine = create_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            api_keys=ApiKeyRing([k.get_secret_value() for k in settings.api_keys]),
            tokens=UserTokens(
                settings.token_secret.get_secret_value(),
                default_ttl_seconds=settings.token_ttl_seconds,
            ),
            vapid_private_key=(
                settings.vapid_private_key.get_secret_value()
                if settings.vapid_private_key
                else None
            ),
            owns_engine=True,
        )

    def enqueued(self) -> None:
        for callback in self.after_enqueue:
            callback()

    async def aclose(self) -> None:
        if self.owns_engine:
            await self.engine.dispose()
