"""Service settings, read from the environment with the ``NOTIFIER_`` prefix.

Nothing here is instantiated at import time: the CLI (or a test) builds a ``Settings`` and hands
it to ``create_app`` and to the workers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./notifier.db"
TWILIO_API_BASE_URL = "https://api.twilio.com"
CHANNELS = ("websocket", "email", "browser", "sms")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    database_url: str = EMBEDDED_DATABASE_URL
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    token_secret: SecretStr | None = None
    token_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_from: str | None = None
    smtp_timeout_seconds: float = 10.0

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_base_url: str = TWILIO_API_BASE_URL
    public_base_url: str | None = None  # where Twilio reaches our status webhook

    vapid_private_key: SecretStr | None = None
    vapid_subject: str | None = None
    push_allow_private_endpoints: bool = False
    push_ttl_seconds: int = Field(default=24 * 3600, ge=0, le=28 * 24 * 3600)

    worker_concurrency: int = Field(default=32, ge=1, le=1024)
    worker_batch_size: int = Field(default=50, ge=1, le=1000)
    lease_seconds: float = Field(default=30.0, ge=1.0)
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)

    # Channels each task trigger notifies on; a task overrides them in its task_metadata as
    # {"notify": {"on_completed": [...], "on_failed": [...], "on_error_log": [...],
    # "on_critical_log": [...]}}.
    notify_on_completed: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["websocket"]
    )
    notify_on_failed: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["websocket", "email"]
    )
    notify_on_error_log: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["websocket"]
    )
    notify_on_critical_log: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["websocket", "email", "sms"]
    )
    # At most one `progress` notification per task per this many seconds (the last always wins).
    progress_notify_interval_seconds: float = Field(default=5.0, ge=0)

    # Rate limits (0 disables): producer requests per API key, and notifications enqueued per
    # recipient (user_id). Per API process; see notifier/api/rate_limit.py.
    rate_limit_key_per_second: float = Field(default=200.0, ge=0)
    rate_limit_key_burst: int = Field(default=400, ge=1)
    rate_limit_recipient_per_minute: float = Field(default=120.0, ge=0)
    rate_limit_recipient_burst: int = Field(default=1000, ge=1)

    # Outbound webhooks (README "Webhooks"). The retry schedule is seconds after each failed
    # attempt, comma-separated; past its last entry a delivery is `failed`.
    webhook_allow_private_endpoints: bool = False
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    webhook_log_days: float = Field(default=7.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    webhook_concurrency_per_endpoint: int = Field(default=4, ge=1, le=256)
    webhook_worker_concurrency: int = Field(default=64, ge=1, le=4096)
    webhook_max_endpoints: int = Field(default=50, ge=1, le=10_000)
    # How long the secret a rotation replaced keeps signing beside the new one.
    webhook_secret_overlap_seconds: float = Field(default=24 * 3600.0, ge=0)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator(
        "notify_on_completed",
        "notify_on_failed",
        "notify_on_error_log",
        "notify_on_critical_log",
        mode="before",
    )
    @classmethod
    def _split_channels(cls, value: object) -> object:
        if isinstance(value, str):
            value = [c.strip() for c in value.split(",") if c.strip()]
        if isinstance(value, list):
            unknown = [c for c in value if c not in CHANNELS]
            if unknown:
                raise ValueError(f"unknown channel(s) {unknown}; known: {', '.join(CHANNELS)}")
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_retry_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            value = [float(s) for s in value.split(",") if s.strip()]
        if isinstance(value, list) and (not value or any(float(s) < 0 for s in value)):
            raise ValueError("must list one or more non-negative numbers of seconds")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def email_configured(self) -> bool:
        return bool(self.smtp_host and self.smtp_from)

    @property
    def sms_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_from)

    @property
    def push_configured(self) -> bool:
        return bool(self.vapid_private_key and self.vapid_subject)
