"""Service settings, read from the environment with the ``NOTIFIER_`` prefix.

Nothing here is instantiated at import time: the CLI (or a test) builds a ``Settings`` and hands
it to ``create_app`` and to the workers.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from notifier.smtp_urls import SmtpRelay, parse_smtp_urls

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./notifier.db"
TWILIO_API_BASE_URL = "https://api.twilio.com"

# What `serve` and `worker` accept as secrets (the embedded `run` makes its own): a key or
# secret anyone could guess lets them act as a producer or forge any user's token.
MIN_API_KEY_CHARS = 16
MIN_TOKEN_SECRET_BYTES = 32
# The placeholders compose.yaml once carried, and the "change me" family.
KNOWN_PLACEHOLDERS = frozenset({"change-me-producer-key", "change-me-at-least-32-random-bytes"})
_PLACEHOLDER_PREFIXES = ("change-me", "changeme", "change_me")

# The SQLAlchemy drivers notifier runs on, by database.
_DRIVERS = {"postgresql": "asyncpg", "postgres": "asyncpg", "sqlite": "aiosqlite"}
_URL_EXAMPLE = "postgresql://user:password@host:5432/dbname or sqlite+aiosqlite:///./notifier.db"


class WeakSecretError(ValueError):
    """A key or secret that `serve` or `worker` refuses; the message names the setting."""


def normalize_database_url(value: str) -> str:
    """The URL with the driver notifier uses: ``postgresql://`` and ``postgres://`` (what most
    hosting providers hand out) become ``postgresql+asyncpg://``, ``sqlite://`` becomes
    ``sqlite+aiosqlite://``. Any other database or driver is refused, naming what is wrong."""
    try:
        backend, _, driver = make_url(value).drivername.partition("+")
    except ArgumentError:
        raise ValueError(f"is not a database URL; expected {_URL_EXAMPLE}") from None
    wanted = _DRIVERS.get(backend)
    if wanted is None:
        raise ValueError(f"names the database {backend!r}; notifier runs on PostgreSQL or SQLite")
    if driver not in ("", wanted):
        raise ValueError(
            f"names the driver {driver!r}; notifier reaches {backend} through {wanted}: "
            f"write {backend}:// or {backend}+{wanted}://"
        )
    canonical = "postgresql" if backend == "postgres" else backend
    # Only the scheme is rewritten: the rest (password escapes, ?ssl=...) stays as written.
    return f"{canonical}+{wanted}://{value.split('://', 1)[1]}"


_FANOUT_SCHEMES = ("nats", "tls")


def check_fanout_url(value: str) -> str:
    """A NATS server's URL (``nats://host:port``, ``tls://`` for TLS; user and password or a
    token may be written in it), refused with the reason when it cannot be one."""
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        raise ValueError("is not a URL; expected nats://host:4222") from None
    if url.scheme not in _FANOUT_SCHEMES:
        raise ValueError(
            f"has the scheme {url.scheme or 'none'!r}; the fan-out broker is a NATS server: "
            "nats://host:4222 (or tls://host:4222)"
        )
    if not url.hostname:
        raise ValueError("names no host; expected nats://host:4222")
    if port == 0 or url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError("must be nats://host[:port] with nothing after the port")
    return value


def settings_problem(exc: ValidationError | SettingsError) -> str:
    """One line naming each setting that is wrong, and why (never its value: it may be a
    password)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors():
        name = "NOTIFIER_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        problems.append(f"{name} {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def _looks_like_placeholder(value: str) -> bool:
    return value in KNOWN_PLACEHOLDERS or value.lower().startswith(_PLACEHOLDER_PREFIXES)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    database_url: str = EMBEDDED_DATABASE_URL
    # Where frames for users' sockets cross between processes: unset, PostgreSQL NOTIFY (the
    # in-process hub on SQLite); ``nats://host:4222``, that NATS server (docs/architecture.md,
    # "Fan-out brokers").
    fanout_url: str | None = None
    # The websocket fast path (docs/architecture.md, "WebSocket fast path"): the enqueue records
    # the websocket channel `sent` and the API publishes the frame right after the commit; the
    # worker republishes once what nobody acked within this many seconds. 0 turns it off (the
    # worker sends every frame, as before).
    websocket_grace_seconds: float = Field(default=5.0, ge=0, le=3600)
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
    # SMTP connections a worker keeps open and sends on at once (over all relays). 16, not 4:
    # more sends finishing together share the outcome's transaction (bench/RESULTS.md, "Email
    # throughput": CPU per email 3.1 -> 2.2 ms, throughput about 2.5x).
    smtp_max_connections: int = Field(default=16, ge=1, le=256)
    # Further relays, tried in order when the one before fails transiently or is paused
    # (docs/architecture.md, "Email relays"); URLs as in notifier/smtp_urls.py.
    smtp_fallback_urls: Annotated[tuple[SmtpRelay, ...], NoDecode] = ()
    # How long a relay that failed transiently is passed over while another one is available.
    breaker_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_base_url: str = TWILIO_API_BASE_URL
    public_base_url: str | None = None  # where Twilio reaches our status webhook
    # Where users reach the service (one-click unsubscribe links in emails; notifier/unsubscribe.py)
    public_url: str | None = None

    vapid_private_key: SecretStr | None = None
    vapid_subject: str | None = None
    push_allow_private_endpoints: bool = False
    push_ttl_seconds: int = Field(default=24 * 3600, ge=0, le=28 * 24 * 3600)

    # Twice-plus the SMTP pool (16): at 32, the sends still out when a claim went were about
    # the pool's size, and the pool waited for the claim (bench/RESULTS.md, "Send slots default").
    worker_concurrency: int = Field(default=64, ge=1, le=1024)
    worker_batch_size: int = Field(default=50, ge=1, le=1000)
    lease_seconds: float = Field(default=30.0, ge=1.0)
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)

    # Channels each task trigger notifies on; a task overrides them in its task_metadata as
    # {"notify": {"on_completed": [...], "on_failed": [...], "on_error_log": [...],
    # "on_critical_log": [...]}}. Names the channel registry does not know are refused at
    # start (notifier.channels.registry.check_trigger_channels).
    notify_on_completed: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["websocket"]
    )
    notify_on_failed: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["websocket", "email"]
    )
    # A user's failed-task notifications are digested per this window with ``leading`` (the
    # first at once, the rest of a storm as one digest); 0 turns it off; a task's
    # task_metadata.notify.digest replaces it (docs/architecture.md, "Digest, throttle and
    # escalation").
    digest_task_failures_seconds: int = Field(default=300, ge=0, le=86_400)
    notify_on_error_log: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["websocket"]
    )
    notify_on_critical_log: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["websocket", "email", "sms"]
    )

    # Rate limits (0 disables): producer requests per API key, and notifications enqueued per
    # recipient (user_id). Per API process; see notifier/api/rate_limit.py.
    rate_limit_key_per_second: float = Field(default=200.0, ge=0)
    rate_limit_key_burst: int = Field(default=400, ge=1)
    rate_limit_recipient_per_minute: float = Field(default=120.0, ge=0)
    rate_limit_recipient_burst: int = Field(default=1000, ge=1)

    # Requests with a user token, per client address (the inbox page and any end-user client),
    # and failed authentications (no credential, or a bad one), per client address: once the
    # budget of failures is spent, every request with a credential from that address is 429
    # until it refills. Per API process, like the limits above; 0 disables.
    rate_limit_user_per_second: float = Field(default=20.0, ge=0)
    rate_limit_user_burst: int = Field(default=100, ge=1)
    rate_limit_auth_failures_per_minute: float = Field(default=30.0, ge=0)
    rate_limit_auth_failures_burst: int = Field(default=30, ge=1)

    # Client acks per WebSocket: a token bucket (``ws_ack_per_second`` refill, ``ws_ack_burst``
    # deep; a socket that overdraws it is closed with 1008) and at most ``ws_acks_in_flight``
    # being recorded at once (then the socket is not read until one is done). The burst must
    # cover a full replay on connect, acked at once: REPLAY_LIMIT (storage/realtime.py), 500.
    ws_ack_per_second: float = Field(default=100.0, gt=0)
    ws_ack_burst: int = Field(default=1000, ge=500)
    ws_acks_in_flight: int = Field(default=64, ge=1, le=10_000)
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
    # A connection must deliver its request line and headers within this many seconds of
    # opening (or of the previous response): slow or silent clients cannot hold sockets.
    header_timeout_seconds: float = Field(default=20.0, gt=0, le=300)
    # ...and, once they are in, must not leave its body waiting longer than this for a piece.
    body_timeout_seconds: float = Field(default=20.0, gt=0, le=300)
    # Open sockets (HTTP and WebSocket) per API process; past it a new connection is answered
    # 503 and closed. Lowered at start to what RLIMIT_NOFILE allows (notifier/api/server.py).
    max_connections: int = Field(default=12_000, ge=1, le=1_000_000)
    # uvicorn's access log, one line per request (tokens redacted); off by default.
    access_log: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("smtp_fallback_urls", mode="before")
    @classmethod
    def _parse_fallback_urls(cls, value: object) -> object:
        return parse_smtp_urls(value) if isinstance(value, str) else value

    @field_validator("fanout_url")
    @classmethod
    def _fanout_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_fanout_url(value.strip())

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
        return value

    def refuse_weak_secrets(self) -> None:
        """Raise ``WeakSecretError`` for a placeholder or guessable API key or token secret.
        `serve` and `worker` call this; the embedded `run` and the tests do not."""
        hint = "`notifier secrets` prints strong values"
        for key in self.api_keys:
            plain = key.get_secret_value()
            if _looks_like_placeholder(plain):
                raise WeakSecretError(f"NOTIFIER_API_KEYS holds a placeholder, not a key: {hint}")
            if len(plain) < MIN_API_KEY_CHARS:
                raise WeakSecretError(
                    f"NOTIFIER_API_KEYS holds a {len(plain)}-character key; each key needs at "
                    f"least {MIN_API_KEY_CHARS} random characters: {hint}"
                )
        if self.token_secret is not None:
            plain = self.token_secret.get_secret_value()
            if _looks_like_placeholder(plain):
                raise WeakSecretError(
                    "NOTIFIER_TOKEN_SECRET is a placeholder: anyone who reads it can forge any "
                    f"user's token; {hint}"
                )
            if len(plain.encode()) < MIN_TOKEN_SECRET_BYTES:
                raise WeakSecretError(
                    f"NOTIFIER_TOKEN_SECRET is only {len(plain.encode())} bytes; it needs at least "
                    f"{MIN_TOKEN_SECRET_BYTES} random bytes: {hint}"
                )

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
