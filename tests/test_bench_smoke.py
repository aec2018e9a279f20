"""A smoke-sized run of every benchmark scenario (``python -m bench.run --smoke``).

It asserts only that each scenario completes and prints well-formed figures: every key there,
every number finite, ``ratio`` = ``value`` / ``baseline``. The scenarios run in two
``bench.run`` processes side by side (each with its own databases, small worker pools so that
PostgreSQL's connection limit is not strained) to stay within the time budget; their numbers
mean nothing here. ``bench/RESULTS.md`` is never touched: each process
writes its report to a temporary path instead, which is checked too.

Needs PostgreSQL (NOTIFIER_BENCH_PG_URL, else NOTIFIER_TEST_PG_URL, else the local server);
fails, naming the URL, if it is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.harness import ADMIN_URL, connect

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
TIMEOUT = 240.0

EXPECTED: dict[int, set[str]] = {
    1: {"dispatch_noop", "dispatch_websocket"},
    2: {"enqueue_single", "enqueue_template", "enqueue_batch"},
    3: {"latency_p50", "latency_p95", "latency_p99", "latency_max"},
    4: {"ws_memory_per_socket", "ws_connect_seconds_per_1k", "ws_fanout_seconds"},
    5: {"growth_claim", "inbox_first_page", "inbox_deep_page"},
    6: {"webhook_events"},
    7: {"dispatch_email"},
}
KEYS = {"name", "value", "unit", "baseline", "ratio", "runs", "median", "min", "max"}

pytestmark = pytest.mark.postgres


def _postgres_reachable() -> None:
    async def probe() -> None:
        connection = await connect(ADMIN_URL)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is unreachable at {ADMIN_URL} ({type(exc).__name__}: {exc}); start "
            "it or point NOTIFIER_BENCH_PG_URL at one",
            pytrace=False,
        )


def _check_figure(figure: dict[str, Any]) -> None:
    assert figure.keys() >= KEYS, f"missing {KEYS - figure.keys()} in {figure}"
    for key in ("value", "baseline", "ratio", "median", "min", "max"):
        assert isinstance(figure[key], int | float), (key, figure)
        assert math.isfinite(figure[key]), (key, figure)
    assert isinstance(figure["runs"], int) and figure["runs"] >= 1
    assert len(figure["samples"]) == figure["runs"]
    assert figure["baseline"] > 0, figure
    assert figure["ratio"] == pytest.approx(figure["value"] / figure["baseline"], rel=1e-3)
    assert figure["min"] <= figure["median"] <= figure["max"]
    assert figure["value"] == figure["median"]
    assert isinstance(figure["unit"], str) and figure["unit"]


GROUPS = ("1,3,6", "2,4,5,7")


def test_every_scenario_emits_well_formed_figures(tmp_path: Path) -> None:
    _postgres_reachable()
    results_before = RESULTS.read_bytes() if RESULTS.exists() else None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    running: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    outputs: dict[str, bytes] = {}
    try:
        for group in GROUPS:
            report = tmp_path / f"RESULTS-{group.replace(',', '')}.md"
            log = tmp_path / f"bench-{group.replace(',', '')}.log"
            with log.open("wb") as stderr:
                running[group] = (
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.run",
                            "--smoke",
                            "--runs",
                            "1",
                            "--scenarios",
                            group,
                            "--results",
                            str(report),
                        ],
                        cwd=REPO,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        start_new_session=True,
                    ),
                    report,
                    log,
                )
        deadline = time.monotonic() + TIMEOUT
        for group, (process, _, log) in running.items():
            try:
                out, _ = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"scenarios {group} did not finish within {TIMEOUT:.0f}s:\n"
                    f"{log.read_text()[-3000:]}"
                )
            outputs[group] = out
            assert process.returncode == 0, (
                f"scenarios {group} exited {process.returncode}:\n{log.read_text()[-3000:]}"
            )
    finally:
        for process, _, _ in running.values():
            if process.poll() is None:  # SIGTERM: it stops its children and drops its databases
                process.terminate()
                try:
                    process.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            process.communicate()

    for group, out in outputs.items():
        figures = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        wanted = set().union(*(EXPECTED[int(n)] for n in group.split(",")))
        assert {f["name"] for f in figures} == wanted, figures
        for figure in figures:
            _check_figure(figure)
        text = running[group][1].read_text()
        assert "**Commit:**" in text and "**Machine:**" in text
        for figure in figures:
            assert f"`{figure['name']}`" in text

    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == results_before
