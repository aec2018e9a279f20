"""Fresh local peers per test, as pytest fixtures, so scripted behaviours and counters never leak
between tests. Registered for the whole suite in tests/conftest.py (``pytest_plugins``); a
package may override one of them with a richer peer (tests/dispatch: ``DispatchSmtpPeer``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.peers.push import PushPeer
from tests.peers.smtp import SmtpPeer
from tests.peers.twilio import TwilioPeer


@pytest.fixture
async def smtp_peer() -> AsyncIterator[SmtpPeer]:
    async with SmtpPeer() as peer:
        yield peer


@pytest.fixture
async def twilio_peer() -> AsyncIterator[TwilioPeer]:
    async with TwilioPeer() as peer:
        yield peer


@pytest.fixture
async def push_peer() -> AsyncIterator[PushPeer]:
    async with PushPeer() as peer:
        yield peer
