"""SMTP relays written as URLs (``NOTIFIER_SMTP_FALLBACK_URLS``), parsed once at start.

    smtp://user:pass@host:587?starttls=true    plain SMTP, upgraded with STARTTLS
    smtp://host:25                             plain SMTP (a relay on a private network)
    smtps://user:pass@host:465                 TLS from the first byte

A URL that cannot be used is refused with a message naming its position in the list and what
is wrong with it, never the URL itself (it may hold a password). Beside the settings, below
every other module, because ``notifier.settings`` validates with it (docs/architecture.md,
"Email relays").
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

# More relays than this is a configuration error, not a need: each one tried costs up to
# NOTIFIER_SMTP_TIMEOUT_SECONDS of a send's time, and the worker gives a send 60 s in all
# (workers/dispatcher.py): the wait for a connection and four relays at the default 10 s fit.
MAX_FALLBACK_RELAYS = 3
_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """Where one relay is and how to talk to it."""

    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    implicit_tls: bool = False

    @property
    def label(self) -> str:
        """``host:port``: the relay's name in ``provider_id``, metrics and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpRelay:
    """The relay a URL names; ``ValueError`` saying what is wrong (never echoing the URL)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("is not a URL with a valid port") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("must begin with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("names no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("may hold only user, password, host, port and ?starttls=")
    starttls = False
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "starttls":
            raise ValueError(f"has the unknown option {key!r} (only starttls is known)")
        if value.lower() not in _TRUE | _FALSE:
            raise ValueError("has starttls= neither true nor false")
        starttls = value.lower() in _TRUE
    if scheme == "smtps" and starttls:
        raise ValueError("asks for smtps:// and starttls=true at once; pick one")
    if parts.password is not None and not parts.username:
        raise ValueError("has a password but no user")
    return SmtpRelay(
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[scheme],
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password is not None else None,
        starttls=starttls,
        implicit_tls=scheme == "smtps",
    )


def parse_smtp_urls(value: str) -> tuple[SmtpRelay, ...]:
    """A comma-separated list of relay URLs, in order; empty entries are ignored."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if len(entries) > MAX_FALLBACK_RELAYS:
        raise ValueError(f"lists {len(entries)} relays; at most {MAX_FALLBACK_RELAYS} are allowed")
    relays: list[SmtpRelay] = []
    for position, entry in enumerate(entries, start=1):
        try:
            relay = parse_smtp_url(entry)
        except ValueError as exc:
            raise ValueError(f"entry {position} {exc}") from None
        # One breaker and one set of series per host:port: a relay listed twice would share them.
        for earlier, other in enumerate(relays, start=1):
            if other.label == relay.label:
                raise ValueError(f"entry {position} repeats entry {earlier} ({relay.label})")
        relays.append(relay)
    return tuple(relays)
