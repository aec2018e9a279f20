"""The storage side of the lifecycle runs on each backend: the dispatch tests' databases."""

from __future__ import annotations

from tests.dispatch.conftest import backend, db_url, pg_scratch

__all__ = ["backend", "db_url", "pg_scratch"]  # fixtures, shared with tests/dispatch
