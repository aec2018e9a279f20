"""A smoke-sized run of ``python -m bench.admin_stats`` (bench/RESULTS.md, "Operator console
stats"): it seeds, serves and measures end to end and prints well-formed figures. The numbers
mean nothing at this size; the script not rotting is the point. Needs PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres


async def test_bench_admin_stats_smoke(pg_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.admin_stats",
        "--rows",
        "3000",
        "--queued",
        "20",
        "--requests",
        "10",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 180)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-3000:]
    figures = {f["name"]: f for f in map(json.loads, stdout.decode().splitlines())}
    assert set(figures) == {"admin_stats_http_1h", "admin_stats_http_24h", "admin_stats_queries_1h"}
    for figure in figures.values():
        for part in (figure["value"], figure["baseline"]):
            assert all(math.isfinite(v) and v > 0 for v in part.values()), figure
        assert figure["ratio_p95"] == pytest.approx(
            figure["value"]["p95"] / figure["baseline"]["p95"], rel=0.01
        )
    # The seeded hour is what the endpoint counted: 3000 over 24 h, 90% of them delivered.
    assert "last hour, email: delivered" in stderr.decode()
