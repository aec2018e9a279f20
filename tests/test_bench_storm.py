"""The failure-storm bench (``python -m bench.scenario_storm --quick``) runs end to end: real
``notifier serve`` and ``notifier worker`` processes, failed-task reports through the API, a
real SMTP sink. Its timings mean nothing here; what the user receives does: with the default
failure digest each user gets exactly two emails (the first failure, then one digest), without
it every failure is an email.

Needs PostgreSQL (NOTIFIER_BENCH_PG_URL, else NOTIFIER_TEST_PG_URL, else the local server).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 300

pytestmark = pytest.mark.postgres


def test_quick_storm_sends_one_leading_and_one_digest_per_user() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.scenario_storm", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = {f["name"]: f for f in map(json.loads, done.stdout.splitlines())}
    emails = figures["storm_emails_digest"]
    assert emails["samples"] == [2 * emails["users"]] and emails["want"] == 2 * emails["users"]
    assert emails["baseline_emails"] == [emails["failures"]]
    timing = figures["storm_close_to_last_digest"]
    assert timing["per_window"][0]["windows"] == emails["users"]
    assert math.isfinite(timing["ratio"]) and timing["ratio"] > 0
    # Printed rounded to milliseconds: the ratio of the rounded figures, within that.
    assert timing["ratio"] == pytest.approx(timing["median"] / timing["baseline"], rel=0.02)
