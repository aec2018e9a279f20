"""Fixtures of the webhook tests: an empty database per test on each backend (the dispatch
tests' ``db_url``) and a fresh receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.dispatch.conftest import backend, db_url, fresh_pg_url, pg_scratch
from tests.peers.webhook import WebhookReceiver

# fixtures, shared with tests/dispatch
__all__ = ["backend", "db_url", "fresh_pg_url", "pg_scratch"]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as peer:
        yield peer
