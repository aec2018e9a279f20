"""The dispatch tests' per-test databases and peers, for the template tests that deliver
(test_channel_parts.py): an empty database per test on each backend, and the dispatch SMTP peer."""

from tests.dispatch.conftest import (
    backend,
    db_url,
    pg_scratch,
    push_settings,
    smtp_peer,
    vapid_key,
)

__all__ = ["backend", "db_url", "pg_scratch", "push_settings", "smtp_peer", "vapid_key"]
