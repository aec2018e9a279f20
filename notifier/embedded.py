"""The embedded default (`notifier run`): development secrets kept beside the SQLite file, so a
restart keeps the API key, user tokens and the browser's push subscriptions valid."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import SecretStr

from notifier.secret_values import generate_api_key, generate_token_secret
from notifier.settings import Settings
from notifier.vapid import generate_private_key


def sqlite_path(database_url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    if not database_url.startswith(prefix) or ":memory:" in database_url:
        return None
    return Path(database_url[len(prefix) :].split("?", 1)[0])


def with_development_secrets(settings: Settings) -> tuple[Settings, str | None]:
    """Fill in what the embedded default may generate; returns the settings and the generated
    development API key (None when the operator set their own keys)."""
    db_path = sqlite_path(settings.database_url)
    state_file = (db_path.parent / f"{db_path.name}.dev-secrets.json") if db_path else None
    state: dict[str, str] = {}
    if state_file is not None and state_file.exists():
        state = json.loads(state_file.read_text())
    state.setdefault("api_key", generate_api_key("dev_"))
    state.setdefault("token_secret", generate_token_secret())
    state.setdefault("vapid_private_key", generate_private_key())
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=2)

    update: dict[str, object] = {}
    generated_key = None
    if not settings.api_keys:
        update["api_keys"] = [SecretStr(state["api_key"])]
        generated_key = state["api_key"]
    if settings.token_secret is None:
        update["token_secret"] = SecretStr(state["token_secret"])
    if settings.vapid_private_key is None:
        update["vapid_private_key"] = SecretStr(state["vapid_private_key"])
        if settings.vapid_subject is None:
            update["vapid_subject"] = "mailto:dev@localhost"
    return settings.model_copy(update=update), generated_key
