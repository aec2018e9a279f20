"""``NOTIFIER_SMTP_FALLBACK_URLS``: what is accepted, and a malformed list refused at start in
one line naming the setting (never the password), by the real `notifier` processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from notifier.settings import Settings, settings_problem
from notifier.smtp_urls import SmtpRelay
from tests.support.service import free_port
from tests.test_cli import STRONG, _each_command, _env, _one_line

PASSWORD = "s3cret-relay-pass"


def test_accepted_forms() -> None:
    settings = Settings(
        smtp_fallback_urls=(
            f"smtp://user:{PASSWORD}@relay.example:2525?starttls=true, smtps://backup.example,"
            " smtp://[2001:db8::1]:25"
        )
    )
    first, second, third = settings.smtp_fallback_urls
    assert (first.host, first.port, first.username, first.starttls, first.implicit_tls) == (
        "relay.example",
        2525,
        "user",
        True,
        False,
    )
    assert first.password is not None and first.password.get_secret_value() == PASSWORD
    assert (second.port, second.implicit_tls, second.username, second.password) == (
        465,
        True,
        None,
        None,
    )
    assert third.label == "[2001:db8::1]:25"
    [escaped] = Settings(smtp_fallback_urls="smtp://u%40x:p%2Cw@h.example").smtp_fallback_urls
    assert escaped.username == "u@x" and escaped.password is not None
    assert escaped.password.get_secret_value() == "p,w"
    assert PASSWORD not in repr(settings)
    assert Settings().smtp_fallback_urls == ()
    assert Settings(smtp_fallback_urls="").smtp_fallback_urls == ()
    assert Settings(smtp_fallback_urls="smtp://h").smtp_fallback_urls == (SmtpRelay("h", 587),)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"http://user:{PASSWORD}@relay.example", "entry 1 must begin with smtp:// or smtps://"),
        (f"smtp://relay.example, smtp://user:{PASSWORD}@:25", "entry 2 names no host"),
        (f"smtp://user:{PASSWORD}@relay.example:port", "entry 1 is not a URL with a valid port"),
        ("smtp://relay.example?tls=1", "unknown option 'tls'"),
        ("smtp://relay.example?starttls=maybe", "neither true nor false"),
        ("smtps://relay.example?starttls=true", "pick one"),
        ("smtp://relay.example/path", "may hold only"),
        (",".join(f"smtp://h{i}" for i in range(4)), "at most 3"),
        ("smtp://h:25, smtps://a, smtp://h:25?starttls=true", "entry 3 repeats entry 1 (h:25)"),
    ],
)
def test_malformed_urls_name_the_setting_and_what_is_wrong(value: str, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(smtp_fallback_urls=value)
    line = settings_problem(refused.value)
    assert line.startswith("NOTIFIER_SMTP_FALLBACK_URLS "), line
    assert says in line, line
    assert PASSWORD not in line, line


async def test_the_service_refuses_to_start_naming_the_setting(tmp_path: Path) -> None:
    env = _env(
        **STRONG,
        NOTIFIER_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/notifier.db",
        NOTIFIER_PORT=str(free_port()),
        NOTIFIER_SMTP_FALLBACK_URLS=f"smtp://relay:{PASSWORD}@relay.example:notaport",
    )
    for result in await _each_command(("serve", "worker", "run"), env=env, cwd=tmp_path):
        line = _one_line(result)
        assert "NOTIFIER_SMTP_FALLBACK_URLS" in line and "valid port" in line, line
        assert PASSWORD not in result.stderr
    assert not (tmp_path / "notifier.db").exists()  # refused before touching anything
