"""``python -m bench.enqueue_cpu``: the API process's CPU for turning 1000 validated requests
into rows and answers (``storage/enqueue.py prepare``), as a ratio to the CPU of validating
those requests (``NotificationCreate``), which every enqueue pays first and which this
repository does not change. ``--websocket``: 1000 websocket-only notifications on the websocket
fast path (docs/architecture.md, "WebSocket fast path"): ``prepare`` and the statement's
parameters (``enqueue_sql.pg_insert``, the frames NOTIFYed with the commit). CPU time
(``time.process_time``), not wall time: on a shared machine the load moves wall time far more
than the code does (bench/RESULTS.md, "Shape and coalescer A/B"). Prints one JSON line, like
``bench.run``'s figures; no database needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from notifier.realtime.fanout import REALTIME_CHANNEL, fanout_payload
from notifier.schemas.notification import NotificationCreate
from notifier.storage.enqueue import pg_statement, prepare
from notifier.storage.websocket_fast_path import FrameNotify

ROWS = 1000
REPEATS = 30
LINK = "https://ci.example.com/builds"
GRACE = 30.0
# As ``PostgresFanout.frame_notify`` makes it.
_FRAME_NOTIFY = FrameNotify(
    REALTIME_CHANNEL, lambda user_id, frame: fanout_payload(user_id, frame, origin="api-1")
)


def _bodies(channels: list[str]) -> list[dict[str, Any]]:
    # A typical batch: some with metadata and a link, none scheduled.
    return [
        {
            "user_id": f"user-{i % 50}",
            "title": f"Build {i} finished",
            "message": "All steps passed. " * 3,
            "channels": channels,
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


def _fast_path(payloads: list[NotificationCreate]) -> object:
    return pg_statement(prepare(payloads, websocket_grace=GRACE), None, _FRAME_NOTIFY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--websocket", action="store_true", help="the websocket fast path")
    websocket = parser.parse_args().websocket
    bodies = _bodies(["websocket"] if websocket else ["websocket", "email"])
    payloads = [NotificationCreate.model_validate(body) for body in bodies]
    measured: Callable[[], object] = (
        (lambda: _fast_path(payloads)) if websocket else (lambda: prepare(payloads))
    )
    # Alternating, so that a burst of load on the machine hits both alike.
    value: list[float] = []
    baseline: list[float] = []
    for _ in range(3):
        baseline += _cpu_ms(lambda: [NotificationCreate.model_validate(b) for b in bodies])
        value += _cpu_ms(measured)
    figure = {
        "name": "enqueue_fast_path_cpu" if websocket else "enqueue_prepare_cpu",
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
