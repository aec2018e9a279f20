"""Databases for the fault suite: a private PostgreSQL cluster for the cases that stop and
restart the database (never the machine's shared server, which other suites use at the same
time), and a fresh database per test on the shared server, cloned from a migrated template
(``CREATE DATABASE … TEMPLATE``: much faster than migrating each one)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.faults.processes import PrivateCluster
from tests.support.databases import clone_pg_database, create_pg_database, drop_pg_database
from tests.support.service import migrate


@pytest.fixture(scope="module")
async def private_cluster() -> AsyncIterator[PrivateCluster]:
    cluster = await PrivateCluster.create()
    try:
        yield cluster
    finally:
        await cluster.destroy()


@pytest.fixture(scope="session")
async def migrated_template() -> AsyncIterator[str]:
    url = await create_pg_database("notifier_faults_template")
    try:
        await migrate(url)
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def fault_db(migrated_template: str) -> AsyncIterator[str]:
    """An empty, migrated PostgreSQL database of this test's own on the shared server."""
    url = await clone_pg_database(migrated_template, "notifier_fault")
    try:
        yield url
    finally:
        await drop_pg_database(url)
