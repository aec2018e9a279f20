"""Fresh local peers per test, so scripted behaviours and counters never leak between tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.peers import PushPeer, SmtpPeer, TwilioPeer


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
