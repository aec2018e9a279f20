"""``bench/record_window.py`` (the email duplicate window in bench/RESULTS.md) still measures:
a short run through a real worker process, its private PostgreSQL and its SMTP server gives
one well-formed figure. What it reports is the bench's to judge, not this test's; that every
email accepted was recorded (and none twice) is checked by the bench itself."""

from __future__ import annotations

import pytest

from bench.record_window import measure

pytestmark = pytest.mark.postgres


async def test_the_window_measurement_runs() -> None:
    figure = await measure(rate=100, seconds=1, fail=0.2, two=0.2)

    assert figure["figure"] == "email_record_window_ms"
    assert figure["emails"] == 80  # 100 queued, 20 to the refused address
    p50, p99, worst = (float(str(figure[k])) for k in ("p50", "p99", "max"))
    assert 0 < p50 <= p99 <= worst < 30_000  # recorded well within a lease
