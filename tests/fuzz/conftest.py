"""Counts the requests the fuzzer sends, per backend, and reports them after the run."""

from __future__ import annotations

from collections import Counter

import pytest

FUZZ_REQUESTS: pytest.StashKey[Counter[str]] = pytest.StashKey()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FUZZ_REQUESTS] = Counter()


@pytest.fixture(scope="session")
def fuzz_requests(pytestconfig: pytest.Config) -> Counter[str]:
    return pytestconfig.stash[FUZZ_REQUESTS]


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    counts = config.stash.get(FUZZ_REQUESTS, Counter())
    if counts:
        per = ", ".join(f"{name}: {n}" for name, n in sorted(counts.items()))
        terminalreporter.write_line(f"OpenAPI fuzz: {sum(counts.values())} requests ({per})")
