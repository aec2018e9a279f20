"""``python -m bench.record_cost [N]``: the worker's CPU per notification for the Python side of
recording an email's transitions and their webhook events on PostgreSQL (the parameters of
the write-back statement, ``transitions.pg_record_params``), for a batch of N delivered
notifications (``channel.delivered`` and ``notification.settled`` each), best of five.

For an A/B against another tree, run the same file over that tree's ``notifier``:
``PYTHONPATH=/tmp/base python /work/wt/perf/bench/record_cost.py`` and this tree's, alternating
(bench/RESULTS.md, "Cheaper transitions A/B"). It measures no database: what the change moves
to the server (building the channel events' jsonb) is in scenario 1's figures instead.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import timedelta

from notifier.lifecycle.machine import Transition
from notifier.models.base import utcnow
from notifier.storage.transitions import TransitionRecord, pg_record_params


def batch(n: int) -> list[TransitionRecord]:
    now = utcnow()
    records = []
    for _ in range(n):
        nid = uuid.uuid4()
        delivered = Transition("channel.delivered", "email", "pending", "delivered")
        settled = Transition("notification.settled", None, "dispatching", "delivered")
        records.append(
            TransitionRecord(
                nid,
                "user-1",
                delivered,
                now,
                attempts=1,
                latency_ms=40,
                provider_id=f"relay-1 <{nid}@notifier.test>",
            )
        )
        status = {
            "email": {
                "status": "delivered",
                "attempts": 1,
                "last_error": None,
                "provider_id": f"relay-1 <{nid}@notifier.test>",
                "next_attempt_at": None,
                "updated_at": (now - timedelta(seconds=1)).isoformat(),
            }
        }
        records.append(TransitionRecord(nid, "user-1", settled, now, delivery_status=status))
    return records


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    records = batch(n)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(50):
            pg_record_params(records)
        best = min(best, (time.process_time() - started) / 50)
    print(f"pg_record_params: {1e6 * best / n:.1f} us CPU per notification (batch of {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
