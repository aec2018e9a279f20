"""``python -m bench.enqueue_cpu``: the API process's CPU for turning 1000 validated requests
into rows and answers (``storage/enqueue.py prepare``), as a ratio to the CPU of validating
those requests (``NotificationCreate``), which every enqueue pays first and which this
repository does not change. CPU time (``time.process_time``), not wall time: on a shared
machine the load moves wall time far more than the code does (bench/RESULTS.md, "Shape and
coalescer A/B"). Prints one JSON line, like ``bench.run``'s figures; no database needed.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from notifier.schemas.notification import NotificationCreate
from notifier.storage.enqueue import prepare

ROWS = 1000
REPEATS = 30
LINK = "https://ci.example.com/builds"


def _bodies() -> list[dict[str, Any]]:
    # A typical batch: two channels, some with metadata and a link, none scheduled.
    return [
        {
            "user_id": f"user-{i % 50}",
            "title": f"Build {i} finished",
            "message": "All steps passed. " * 3,
            "channels": ["websocket", "email"],
            **({"metadata": {"build": i}, "action_url": LINK} if i % 3 else {}),
        }
        for i in range(ROWS)
    ]


def _cpu_ms(run: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(REPEATS):
        started = time.process_time()
        run()
        samples.append((time.process_time() - started) * 1000)
    return samples


def main() -> None:
    bodies = _bodies()
    payloads = [NotificationCreate.model_validate(body) for body in bodies]
    # Alternating, so that a burst of load on the machine hits both alike.
    value: list[float] = []
    baseline: list[float] = []
    for _ in range(3):
        baseline += _cpu_ms(lambda: [NotificationCreate.model_validate(b) for b in bodies])
        value += _cpu_ms(lambda: prepare(payloads))
    figure = {
        "name": "enqueue_prepare_cpu",
        "value": round(min(value), 3),
        "unit": f"ms CPU per {ROWS} notifications (min)",
        "baseline": round(min(baseline), 3),
        "baseline_name": f"validating the same {ROWS} requests",
        "ratio": round(min(value) / min(baseline), 3),
        "median": round(statistics.median(value), 3),
        "baseline_median": round(statistics.median(baseline), 3),
        "better": "lower",
    }
    print(json.dumps(figure))


if __name__ == "__main__":
    main()
