"""A private PostgreSQL cluster for the cases that stop and restart the database (never the
machine's shared server, which other suites use at the same time)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.faults.processes import PrivateCluster


@pytest.fixture(scope="module")
async def private_cluster() -> AsyncIterator[PrivateCluster]:
    cluster = await PrivateCluster.create()
    try:
        yield cluster
    finally:
        await cluster.destroy()
