"""A smoke-sized run of the scale figure (``python -m bench.scale``): both brokers and both
worker counts complete, nothing goes missing, every process's CPU is counted (PostgreSQL's
backends, and the NATS server on the NATS runs), and the tables can be rendered again from the
JSON lines. The numbers mean nothing at this size; bench/RESULTS.md is never touched (the
script does not write it).

Needs PostgreSQL and the NATS server (NOTIFIER_BENCH_NATS_URL, default nats://127.0.0.1:4222);
fails, naming what is missing, if either is unreachable."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.nats import require_nats

REPO = Path(__file__).resolve().parent.parent
NATS_URL = os.environ.get("NOTIFIER_BENCH_NATS_URL", "nats://127.0.0.1:4222")

pytestmark = pytest.mark.postgres


def _scale(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.scale", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_smoke_sized_scale_run_counts_every_process(tmp_path: Path) -> None:
    asyncio.run(require_nats(NATS_URL))
    args = ("--runs", "1", "--ws-n", "200", "--rate", "40", "--seconds", "1", "--noop-n", "300")
    result = _scale(*args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    labels = {row["label"] for row in rows}
    assert labels == {
        "ws_drain_notify",
        "ws_rate_notify",
        "ws_drain_nats",
        "ws_rate_nats",
        "noop_1_workers",
        "noop_2_workers",
    }
    for row in rows:
        cpu = row["cpu_seconds"]
        assert "postgres" in cpu and cpu["postgres"] > 0, row
        assert ("nats-server" in cpu) == row["label"].endswith("_nats"), row
        if row["label"].startswith("ws_"):
            assert {"api1", "api2", "worker1", "worker2"} <= cpu.keys(), row
        if row["label"].startswith("ws_rate"):
            assert row["missing"] == 0 and row["p99_ms"] is not None, row
    assert "forward, a frame for nobody here:" in result.stdout

    output = tmp_path / "scale.out"
    output.write_text(result.stdout)
    again = _scale("--tables", str(output), timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("| ws_drain_nats |") == 2  # the medians and the runs
